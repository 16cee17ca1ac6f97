"""Every committed baseline holds, with the plan it records: what CI runs under both kernel settings.

The invocations are read from ``baselines/`` itself: for each model folder, its files grouped by
recovery and by the ratios their criterion has, so that every committed file is compared and no
gate lacks a file. ``.ci/run`` runs this module a second time under ``ATEN_CPU_CAPABILITY=default``
(another CPU's rounding): the verdicts, and the plans, must not change.
"""

from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from pytest_prune.gating.baselines import BaselineStore
from pytest_prune.pipeline.targets import parse_method_id

BASELINES = Path(__file__).resolve().parents[1] / "baselines"


def invocations() -> list:
    """(model, recovery, criteria, ratios, method ids) per pytest run that covers the files."""
    store = BaselineStore(BASELINES)
    runs = []
    for folder in sorted(p for p in BASELINES.iterdir() if p.is_dir()):
        by_criterion = defaultdict(list)
        for method in store.methods(folder.name):
            spec = parse_method_id(method)
            # a file measured under an allocation given explicitly is compared under it too (the
            # natural ones, and sensitivity for layerwise budgets, are what a run picks by itself)
            given = store.load(folder.name, method).settings.get("allocation")
            explicit = given if given == "sensitivity" and not _is_default_sensitivity(spec) else None
            by_criterion[(spec.recovery, explicit, spec.criterion)].append((spec.target, method))
        grouped = defaultdict(list)
        for (recovery, explicit, criterion), entries in by_criterion.items():
            ratios = tuple(sorted({t for t, _ in entries if t is not None}))
            grouped[(recovery, explicit or "", ratios)].append((criterion, [m for _, m in entries]))
        for (recovery, explicit, ratios), members in sorted(grouped.items()):
            criteria = [c for c, _ in members]
            methods = sorted(m for _, ms in members for m in ms)
            runs.append(pytest.param(folder.name, recovery, criteria, ratios, methods, explicit or None,
                                     id="-".join(filter(None, (folder.name, recovery, explicit,
                                                               "-".join(ratios) or "ratio-free")))))
    return runs


def _is_default_sensitivity(spec) -> bool:
    """Whether a run without --prune-allocation picks sensitivity for this method by itself."""
    from pytest_prune.criteria import get_criterion

    budget = spec.target is not None and spec.target.startswith(("macs:", "params:"))
    return budget and get_criterion(spec.criterion).natural_allocation == "layerwise"


def test_every_committed_file_is_covered():
    covered = {(p.values[0], m) for p in invocations() for m in p.values[4]}
    store = BaselineStore(BASELINES)
    files = {(f.name, m) for f in BASELINES.iterdir() if f.is_dir() for m in store.methods(f.name)}
    assert covered == files and len(files) >= 60


@pytest.mark.parametrize("model, recovery, criteria, ratios, methods, allocation", invocations())
def test_committed_baselines_pass_with_their_plans(pytester, tmp_path, model, recovery, criteria, ratios, methods,
                                                   allocation):
    args = [f"--prune-model={model}", f"--prune-baselines={BASELINES}", f"--prune-recovery={recovery}",
            f"--prune-criteria={','.join(criteria)}", f"--prune-report={tmp_path}", "-p", "no:randomly"]
    # the export check is gated by default (skipped without the onnx extra): the files hold it too
    if ratios:
        args.append(f"--prune-ratios={','.join(ratios)}")
    if allocation:
        args.append(f"--prune-allocation={allocation}")
    result = pytester.runpytest(*args)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-3000:]
    assert outcomes["passed"] >= 5 * len(methods)
    # the same channels removed as when the baseline was written (another CPU must not flip a plan)
    measured = pd.read_csv(tmp_path / "results.csv").set_index("method")
    assert sorted(measured.index) == methods
    store = BaselineStore(BASELINES)
    for method in methods:
        stored = store.load(model, method).provenance
        plan = (stored.get("plan") or {}).get("digest")  # None for a pure decomposition
        got = measured.loc[method, "plan_digest"]
        assert (None if pd.isna(got) else got) == plan, method
        assert measured.loc[method, "dense_digest"] == stored["dense_model"]["digest"]
