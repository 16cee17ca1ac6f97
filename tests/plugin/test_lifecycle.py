"""When the work happens: a method is measured in its first item's setup, once; a failure there
fails the method's other items with the same error, without re-running; --collect-only builds no
model, loads no data and traces nothing."""

import textwrap

BOOM = """
    from pathlib import Path
    from pytest_prune.criteria.base import Criterion
    from pytest_prune.criteria.registry import register
    from pytest_prune.errors import PruneError

    @register
    class Boom(Criterion):
        name = "boom"

        def scores(self, ctx):
            calls = Path("calls.txt")
            calls.write_text(str(int(calls.read_text() if calls.exists() else 0) + 1))
            raise PruneError("boom: this criterion always fails")
"""

USER = """
    from pathlib import Path
    import torch
    from torch import nn

    def build():
        Path("model-was-built").write_text("")
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, 3))

    def data():
        Path("data-was-read").write_text("")
        g = torch.Generator().manual_seed(0)
        return torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
"""


def test_a_failing_method_is_measured_once_and_fails_all_its_items_at_setup(pytester):
    pytester.makeconftest(textwrap.dedent(BOOM))
    # in a subprocess: the criterion registry is per process, and "boom" must not leak into
    # the other tests' lists of every criterion
    result = pytester.runpytest_subprocess("--prune-model=lenet5", "--prune-criteria=boom", "--prune-ratios=0.5",
                                "-p", "no:randomly", "--prune-update-baselines")
    result.assert_outcomes(errors=7)
    result.stdout.fnmatch_lines(["ERROR lenet5::boom-0.5::top1 - PruneError: boom*",
                                 "ERROR lenet5::boom-0.5::attribution_retention - PruneError: boom*"])
    assert (pytester.path / "calls.txt").read_text() == "1"


def test_the_measurement_is_reported_as_the_first_items_setup(pytester):
    result = pytester.runpytest("--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5",
                                "-p", "no:randomly", "--prune-update-baselines", "--durations=0", "-vv")
    result.assert_outcomes(passed=7)
    durations = [line for line in result.outlines if " setup " in line and "lenet5::l1-0.5" in line]
    assert len(durations) >= 1 and durations[0].split()[-1] == "lenet5::l1-0.5::top1"
    seconds = float(durations[0].split("s")[0])
    later = [float(line.split("s")[0]) for line in durations[1:]]
    assert all(t < seconds for t in later)  # the others find it measured


def test_collect_only_lists_the_gates_without_building_the_model_or_reading_the_data(pytester):
    pytester.makepyfile(usernet=textwrap.dedent(USER))
    pytester.syspathinsert()
    result = pytester.runpytest("--prune-model=usernet:build", "--prune-data=usernet:data",
                                "--prune-criteria=l1", "--prune-ratios=0.5", "--collect-only", "-q",
                                "-p", "no:randomly")
    result.stdout.fnmatch_lines(["usernet.build::l1-0.5::top1", "usernet.build::l1-0.5::colour_selectivity"])
    assert not (pytester.path / "data-was-read").exists()
    assert not (pytester.path / "model-was-built").exists()


def test_collect_only_builds_no_built_in_model(pytester, monkeypatch):
    import pytest_prune.models.zoo as zoo

    def refuse(*args, **kwargs):
        raise AssertionError("--collect-only built a model")

    monkeypatch.setattr(zoo, "build_model", refuse)
    monkeypatch.setattr("pytest_prune.models.build_model", refuse)
    result = pytester.runpytest("--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5",
                                "--collect-only", "-q", "-p", "no:randomly")
    result.stdout.fnmatch_lines(["lenet5::l1-0.5::top1"])
    assert "colour_selectivity" not in result.stdout.str()  # grey digits: known from the spec
    assert result.ret == 0
