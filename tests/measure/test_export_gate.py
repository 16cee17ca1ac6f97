"""The export_equivalence gate item (on by default, ``--prune-no-export`` leaves it out): passes against the baseline it wrote, fails
on a planted export regression (a forward that takes another branch under export), fails with the
exporter's reason for an unexportable model, and is skipped (never passed) without the onnx extra;
``--prune-latency-backend`` and ``--prune-round-to`` reach results.csv."""

import re
import textwrap

import pytest

from pytest_prune.measure.export import onnx_available

if onnx_available():
    # loaded before the in-process pytest runs: pytester drops what a run imported, and onnx's
    # compiled part cannot be imported twice (the exporter then fails on 'CheckerContext'); see
    # tests/conftest.py, where this import belongs for every pytester test that exports
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

PACKAGE = """
    import os
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, unexportable=False):
            super().__init__()
            self.unexportable = unexportable
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            )
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

        def forward(self, x):
            y = self.head(self.features(x))
            if self.unexportable:
                y = y.cumprod(1)  # aten::cumprod has no ONNX symbolic at opset 17
            # the planted regression: a branch taken only under export (as real models have for
            # "export-friendly" code paths), switched on by the test
            if torch.onnx.is_in_onnx_export() and os.environ.get("PLANTED_EXPORT_SHIFT"):
                y = y + float(os.environ["PLANTED_EXPORT_SHIFT"])
            return y

    def build():
        torch.manual_seed(0)
        return Net()

    def build_unexportable():
        torch.manual_seed(0)
        return Net(unexportable=True)

    def data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 3, 16, 16, generator=g)
        return x, torch.randint(0, 10, (96,), generator=g)
"""

COMMON = ["--prune-data=exportpkg.net:data", "--prune-criteria=l1", "--prune-ratios=0.5",
          "--prune-attribution=saliency", "-p", "no:randomly", "-rA"]


@pytest.fixture
def project(pytester, monkeypatch):
    (pytester.path / "exportpkg").mkdir()
    (pytester.path / "exportpkg" / "__init__.py").write_text("")
    (pytester.path / "exportpkg" / "net.py").write_text(textwrap.dedent(PACKAGE))
    monkeypatch.syspath_prepend(str(pytester.path))
    monkeypatch.delenv("PLANTED_EXPORT_SHIFT", raising=False)
    yield pytester
    import sys

    for name in ("exportpkg", "exportpkg.net"):
        sys.modules.pop(name, None)


def outcome_of(result, check: str) -> str:
    found = re.search(rf"^(PASSED|FAILED|SKIPPED|ERROR)\S* .*::{check}\b", result.stdout.str(), re.M)
    return found.group(1) if found else "absent"


@pytest.mark.skipif(not onnx_available(), reason='needs the onnx extra: pip install -e ".[onnx]"')
def test_export_gate_passes_on_its_baseline_and_fails_on_a_planted_export_regression(project, monkeypatch, tmp_path):
    import json

    import pandas as pd

    model = ["--prune-model=exportpkg.net:build", "--prune-round-to=8"]
    timed = ["--prune-min-speedup=0", "--prune-latency-backend=onnxruntime", f"--prune-report={tmp_path}"]
    written = project.runpytest(*model, *COMMON, "--prune-update-baselines")
    assert written.parseoutcomes().get("passed", 0) == 8, written.stdout.str()[-2000:]
    held = project.runpytest(*model, *COMMON, *timed)
    assert outcome_of(held, "export_equivalence") == "PASSED", held.stdout.str()[-2000:]
    assert held.parseoutcomes() == {"passed": 9}  # 8 baseline checks and the speed-up
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert row["onnx_bytes"] > 8 * 27 * 4 and row["export_max_diff"] < 1e-5
    assert row["latency_backend"] == "onnxruntime" and row["latency_dense_iqr_ms"] >= 0
    # --prune-round-to 8 at 0.5: the 16-channel group keeps 8, the 8-channel one is left whole
    # (unrounded it would keep 4: never rounded to zero, never below 8)
    assert sorted(json.loads(row["plan_removed"]).values()) == [0, 8]
    # the same model, whose ONNX file now adds 5e-4 to every logit: above the baseline's tolerance
    # (1e-4), below the absolute limit (1e-3): the baseline comparison fails it
    monkeypatch.setenv("PLANTED_EXPORT_SHIFT", "5e-4")
    planted = project.runpytest(*model, *COMMON, "-k", "export_equivalence or top1")
    text = planted.stdout.str()
    assert outcome_of(planted, "export_equivalence") == "FAILED", text[-2000:]
    assert outcome_of(planted, "top1") == "PASSED" and "baseline file" in text
    # 0.01: the ONNX file computes another function, failed even while writing baselines
    monkeypatch.setenv("PLANTED_EXPORT_SHIFT", "0.01")
    rewritten = project.runpytest(*model, *COMMON, "--prune-update-baselines", "-k", "export_equivalence")
    assert outcome_of(rewritten, "export_equivalence") == "FAILED"
    assert "TraceError: the ONNX export of Net computes another function" in rewritten.stdout.str()
    # --prune-no-export, or the ini key, leaves the item out; --prune-export overrides the ini key
    listed = project.runpytest(*model, *COMMON, "--prune-no-export", "--collect-only", "-q")
    assert "export_equivalence" not in listed.stdout.str() and "::top1" in listed.stdout.str()
    project.makeini("[pytest]\nprune_export = false\n")
    listed = project.runpytest(*model, *COMMON, "--collect-only", "-q")
    assert "export_equivalence" not in listed.stdout.str() and "::top1" in listed.stdout.str()
    listed = project.runpytest(*model, *COMMON, "--prune-export", "--collect-only", "-q")
    assert "::export_equivalence" in listed.stdout.str()


@pytest.mark.skipif(not onnx_available(), reason='needs the onnx extra: pip install -e ".[onnx]"')
def test_a_baseline_written_without_the_export_gate_is_judged_on_the_export_limit(project, monkeypatch):
    model = ["--prune-model=exportpkg.net:build"]
    written = project.runpytest(*model, *COMMON, "--prune-no-export", "--prune-update-baselines")
    assert written.parseoutcomes().get("passed", 0) == 7, written.stdout.str()[-2000:]
    held = project.runpytest(*model, *COMMON)  # the upgraded plugin gates the export by default
    text = held.stdout.str()
    assert held.parseoutcomes() == {"passed": 8}, text[-2000:]
    assert "no stored export_equivalence" in text and "1e-3 limit" in text.replace("0.001", "1e-3")
    # the limit still holds: an export 0.01 away fails, stored value or not
    monkeypatch.setenv("PLANTED_EXPORT_SHIFT", "0.01")
    planted = project.runpytest(*model, *COMMON, "-k", "export_equivalence")
    assert outcome_of(planted, "export_equivalence") == "FAILED", planted.stdout.str()[-2000:]
    assert "computes another function" in planted.stdout.str()


@pytest.mark.skipif(not onnx_available(), reason='needs the onnx extra: pip install -e ".[onnx]"')
def test_an_unexportable_model_fails_its_export_gate_with_the_exporters_reason(project):
    result = project.runpytest("--prune-model=exportpkg.net:build_unexportable", *COMMON,
                               "-k", "export_equivalence")
    text = result.stdout.str()
    assert outcome_of(result, "export_equivalence") == "FAILED", text[-2000:]
    assert re.search(r"TraceError: Net cannot be exported to ONNX .*aten::cumprod", text), text[-2000:]


def test_without_the_onnx_extra_the_export_gate_is_skipped_with_the_install_hint(project, monkeypatch):
    import pytest_prune.pipeline.run as run_module
    import pytest_prune.plugin.items as items_module

    for module in (run_module, items_module):
        monkeypatch.setattr(module, "onnx_available", lambda: False)
    result = project.runpytest("--prune-model=exportpkg.net:build", *COMMON, "-k", "export_equivalence")
    assert result.parseoutcomes() == {"skipped": 1, "deselected": 7}, result.stdout.str()[-2000:]
    assert re.search(r'SKIPPED .*export_equivalence not measured: .*pip install -e "\.\[onnx\]"',
                     result.stdout.str())
