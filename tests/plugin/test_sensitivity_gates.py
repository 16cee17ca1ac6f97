"""``--prune-allocation sensitivity`` through the gates: baselines written, then compared, with the
allocation and the analysis's recovery recorded in their settings."""

import json

COMMAND = ["--prune-model=lenet5", "--prune-criteria=l1", "--prune-allocation=sensitivity",
           "--prune-ratios=macs:0.5", "--prune-recovery=lsq", "-p", "no:randomly",
           # the export check is --prune-round-to's business, and onnx's; saliency keeps it cheap
           "-k", "not export_equivalence", "--prune-attribution=saliency"]


def test_the_sensitivity_allocation_runs_through_the_gates(pytester):
    baselines = pytester.path / "bl"
    written = pytester.runpytest(*COMMAND, f"--prune-baselines={baselines}", "--prune-update-baselines")
    written.assert_outcomes(passed=6)
    # the analysis says what it costs before it runs (minutes on a deep net), and what it spent
    written.stdout.re_match_lines([r"pytest-prune: l1: sensitivity analysis of 4 channel groups .*"
                                   r"--prune-allocation layerwise skips it",
                                   r"pytest-prune: l1: sensitivity analysis done, \d+ passes on \d+ images in .* s"])
    stored = json.loads((baselines / "lenet5" / "l1-macs0.5+lsq.json").read_text())
    assert stored["settings"]["allocation"] == "sensitivity"
    assert stored["settings"]["sensitivity_recovery"] == "none"
    removed = stored["provenance"]["plan"]["removed"]
    # the split follows the table, not one fraction for all: LeNet-5's groups lose unequal shares
    sizes = {"features.0": 6, "features.3": 16, "classifier.1": 120, "classifier.3": 84}
    assert len({round(removed[g] / n, 2) for g, n in sizes.items()}) > 1
    assert abs(stored["checks"]["macs_reduction"]["value"] - 0.5) <= 0.02

    pytester.runpytest(*COMMAND, f"--prune-baselines={baselines}").assert_outcomes(passed=6)


def test_the_analysis_recovery_is_a_setting_of_the_baselines_of_this_allocation_only():
    from pytest_prune.pipeline.run import PruneRun
    from pytest_prune.pipeline.settings import RunSettings

    lsq = PruneRun(RunSettings("lenet5", allocation="sensitivity", sensitivity_recovery="lsq"))
    assert lsq.settings_record("lsq", "l1")["sensitivity_recovery"] == "lsq"
    # a baseline of one analysis recovery is then refused under another (a settings mismatch)
    assert lsq.settings_record("lsq", "l1") != PruneRun(RunSettings("lenet5", allocation="sensitivity")).settings_record("lsq", "l1")
    plain = PruneRun(RunSettings("lenet5", sensitivity_recovery="lsq"))
    assert "sensitivity_recovery" not in plain.settings_record("lsq", "l1")
