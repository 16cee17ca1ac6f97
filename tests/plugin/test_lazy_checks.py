"""Each check measures only what it needs, and work on the dense model is done once per run."""

import textwrap

import pandas as pd

GATES = ["--prune-model=lenet5", "--prune-criteria=l1,random", "--prune-ratios=0.5", "-p", "no:randomly"]

COUNTING = """
    import pytest_prune.pipeline.run as run
    import pytest_prune.pipeline.inspection as inspection

    calls = {"dense_maps": 0, "looks": 0}
    original_maps, original_look = run.attribution_maps, run.attribution_look

    def counted_maps(*args, **kwargs):
        calls["dense_maps"] += 1
        return original_maps(*args, **kwargs)

    def counted_look(*args, **kwargs):
        calls["looks"] += 1
        return original_look(*args, **kwargs)

    def pytest_configure(config):
        run.attribution_maps, run.attribution_look = counted_maps, counted_look

    def pytest_unconfigure(config):
        run.attribution_maps, run.attribution_look = original_maps, original_look
        print(f"CALLS dense_maps={calls['dense_maps']} looks={calls['looks']}")
"""


def test_selecting_one_check_skips_attribution_colour_and_latency(pytester):
    pytester.makeconftest(textwrap.dedent(COUNTING))
    baselines = ["--prune-baselines", str(pytester.path / "bl")]
    pytester.runpytest(*GATES, *baselines, "--prune-update-baselines").assert_outcomes(passed=14)
    report = pytester.path / "report"
    result = pytester.runpytest(*GATES, *baselines, "-k", "accuracy_drop", f"--prune-report={report}", "-s")
    result.assert_outcomes(passed=2, deselected=12)
    assert "CALLS dense_maps=0 looks=0" in result.stdout.str()
    rows = pd.read_csv(report / "results.csv")
    assert rows["attribution_spearman"].isna().all() and rows["speedup"].isna().all()
    assert rows["export_max_diff"].isna().all()  # nor the ONNX export
    assert rows["top1_pruned"].notna().all()


def test_dense_attribution_maps_are_computed_once_per_run(pytester):
    pytester.makeconftest(textwrap.dedent(COUNTING))
    result = pytester.runpytest(*GATES, "--prune-baselines", str(pytester.path / "bl"),
                                "--prune-update-baselines", "-s")
    result.assert_outcomes(passed=14)
    assert "CALLS dense_maps=1 looks=2" in result.stdout.str()  # two methods, one dense map set
