"""The plugin end to end, with pytester: options, baselines, failures, summary, report."""

import json

import pandas as pd
import pytest

FAST = ["--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5", "-p", "no:randomly"]
# grey-input LeNet-5: no colour_selectivity item (it could never fail there)
# export_equivalence is gated by default (the test extra brings onnx and onnxruntime)
CHECKS = sorted(["top1", "accuracy_drop", "macs_reduction", "params_reduction", "surgery_equivalence",
                 "attribution_retention", "export_equivalence"])


def _run(pytester, *args):
    return pytester.runpytest(*FAST, "--prune-baselines", str(pytester.path / "bl"), *args)


def _baseline_file(pytester):
    return pytester.path / "bl" / "lenet5" / "l1-0.5.json"


def test_help_lists_every_option_with_its_default(pytester):
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    for option in ["--prune-model", "--prune-weights", "--prune-data", "--prune-criteria",
                   "--prune-ratios", "--prune-baselines", "--prune-update-baselines",
                   "--prune-seed", "--prune-report", "--prune-allow-pickle"]:
        assert option in out
    assert "prune_ratios" in out  # ini key
    assert "default: 0.3,0.5,0.7" in out


def test_missing_baseline_fails_and_says_how_to_write_it(pytester):
    result = _run(pytester, "-v")
    result.assert_outcomes(failed=7)
    out = result.stdout.str()
    for check in CHECKS:
        assert f"lenet5::l1-0.5::{check}" in out
    assert "no baseline for lenet5::l1-0.5" in out
    assert "--prune-update-baselines" in out
    assert "Traceback" not in out


def test_update_then_compare_passes(pytester):
    written = _run(pytester, "--prune-update-baselines")
    written.assert_outcomes(passed=7)
    data = json.loads(_baseline_file(pytester).read_text())
    assert sorted(data["checks"]) == CHECKS
    assert data["settings"]["data"] == "digits"
    assert "baseline written" in written.stdout.str()
    compared = _run(pytester)
    compared.assert_outcomes(passed=7)


def test_a_baseline_demanding_more_fails_with_measured_baseline_and_tolerance(pytester):
    _run(pytester, "--prune-update-baselines").assert_outcomes(passed=7)
    path = _baseline_file(pytester)
    data = json.loads(path.read_text())
    data["checks"]["accuracy_drop"]["value"] = -0.5
    data["checks"]["macs_reduction"]["value"] = 0.99
    path.write_text(json.dumps(data))
    result = _run(pytester)
    result.assert_outcomes(passed=5, failed=2)
    out = result.stdout.str()
    assert "accuracy_drop (dense top-1 minus compressed top-1 (fraction)): measured" in out
    assert "baseline -0.5, tolerance 0.01" in out and "must be at most -0.49" in out
    assert "REGRESSION" in out
    assert "FAIL (accuracy_drop, macs_reduction)" in out  # summary row
    assert "Traceback" not in out


def test_corrupt_baseline_is_reported_without_traceback(pytester):
    _run(pytester, "--prune-update-baselines")
    _baseline_file(pytester).write_text("{ truncated")
    result = _run(pytester)
    result.assert_outcomes(failed=7)
    out = result.stdout.str()
    assert "cannot be read" in out and "Traceback" not in out
    # the summary row says nothing was judged, not that seven checks regressed
    assert "ERROR (every check: BaselineError)" in out and "FAIL (" not in out


def test_baseline_from_other_settings_is_a_mismatch_not_a_comparison(pytester):
    _run(pytester, "--prune-update-baselines")
    result = _run(pytester, "--prune-seed=7")
    result.assert_outcomes(failed=7)
    assert "seed: baseline 0, this run 7" in result.stdout.str()


def test_ini_keys_configure_the_gates(pytester):
    pytester.makeini(
        f"""
        [pytest]
        prune_model = lenet5
        prune_criteria = random
        prune_ratios = 0.3
        prune_baselines = {pytester.path / 'ini-bl'}
        prune_update_baselines = true
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=7)
    assert (pytester.path / "ini-bl" / "lenet5" / "random-0.3.json").is_file()
    assert "lenet5::random-0.3::accuracy_drop" in result.stdout.str()


def test_summary_table_and_report(pytester):
    report = pytester.path / "rep"
    result = _run(pytester, "--prune-update-baselines", "--prune-report", str(report))
    out = result.stdout.str()
    assert "pytest-prune summary" in out
    row = next(line for line in out.splitlines() if line.startswith("lenet5") and "l1-0.5" in line)
    assert "baseline written" in row
    frame = pd.read_csv(report / "results.csv")
    for column in ["model", "criterion", "ratio", "top1_dense", "top1_pruned", "macs_dense",
                   "macs_pruned", "params_dense", "params_pruned", "score_seconds"]:
        assert column in frame.columns
    assert frame.loc[0, "criterion"] == "l1" and frame.loc[0, "ratio"] == 0.5
    assert 0.95 <= frame.loc[0, "top1_dense"] <= 1.0
    assert frame.loc[0, "macs_pruned"] < frame.loc[0, "macs_dense"]
    document = json.loads((report / "results.json").read_text())
    assert document["methods"][0]["model"] == "lenet5" and document["status"] == "written"
    # every gate that ran has its verdict, with the value it wrote
    assert len(document["verdicts"]) == result.parseoutcomes()["passed"] and set(CHECKS) <= {
        v["check"] for v in document["verdicts"]}
    assert all(v["outcome"] == "written" and v["baseline"] == v["measured"] for v in document["verdicts"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prune-criteria=l1,nonsense"], "unknown pruning criterion 'nonsense'"),
        (["--prune-ratios=0.5,1.5"], "outside (0, 1)"),
        (["--prune-ratios=half"], "'half' is not a number"),
        (["--prune-model=no_such_model"], "is not a known model"),
    ],
)
def test_bad_options_are_usage_errors(pytester, args, message):
    result = pytester.runpytest(*FAST, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_gates_alone_unless_test_paths_are_named(pytester):
    pytester.makepyfile(test_user="def test_fails():\n    assert False\n")
    gates_only = _run(pytester, "--prune-update-baselines")
    gates_only.assert_outcomes(passed=7)
    both = _run(pytester, "test_user.py")
    both.assert_outcomes(passed=7, failed=1)


def test_fixtures_and_marker_for_user_tests(pytester):
    pytester.makepyfile(
        test_user="""
        import pytest

        def test_dense(prune_model, prune_data):
            x, y = prune_data.evaluation[0]
            assert prune_model(x[None]).shape == (1, 10)

        def test_factory(prune_pruned):
            result = prune_pruned("l1", 0.5)
            assert result.macs_pruned < result.macs_dense
            assert prune_pruned("l1", 0.5) is result  # cached per session

        @pytest.mark.prune(criterion="random", ratio=0.3)
        def test_marker(prune_result):
            assert prune_result.criterion == "random" and prune_result.ratio == 0.3
            assert prune_result.equivalence_max_abs <= 1e-5
        """
    )
    result = pytester.runpytest("test_user.py", "-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_recovery_and_budget_ids_and_baselines(pytester):
    result = _run(pytester, "--prune-ratios=macs:0.5", "--prune-recovery=none,lsq",
                  "--prune-update-baselines", "-v")
    result.assert_outcomes(passed=14)
    out = result.stdout.str()
    assert "lenet5::l1-macs0.5::accuracy_drop" in out
    assert "lenet5::l1-macs0.5+lsq::accuracy_drop" in out
    stored = json.loads((pytester.path / "bl" / "lenet5" / "l1-macs0.5+lsq.json").read_text())
    assert stored["settings"]["recovery"] == "lsq"
    # the budget is met: half the MACs kept, within the documented 2 %
    reduction = stored["checks"]["macs_reduction"]["value"]
    assert abs((1 - reduction) - 0.5) <= 0.02


def test_baseline_of_another_recovery_is_a_mismatch(pytester):
    _run(pytester, "--prune-update-baselines")
    path = _baseline_file(pytester)
    data = json.loads(path.read_text())
    data["settings"]["recovery"] = "lsq"
    path.write_text(json.dumps(data))
    result = _run(pytester)
    result.assert_outcomes(failed=7)
    assert "recovery: baseline 'lsq', this run 'none'" in result.stdout.str()


def test_ratio_free_methods_run_once_without_equivalence(pytester):
    result = _run(pytester, "--prune-criteria=tucker-vbmf", "--prune-update-baselines", "-v")
    out = result.stdout.str()
    result.assert_outcomes(passed=6)  # no surgery: no equivalence or colour check
    assert "lenet5::tucker-vbmf::macs_reduction" in out
    assert "tucker-vbmf-0.5" not in out


def test_min_speedup_gate_compares_with_the_option(pytester):
    result = _run(pytester, "--prune-update-baselines", "--prune-min-speedup=1000")
    result.assert_outcomes(passed=7, failed=1)
    out = result.stdout.str()
    assert "lenet5::l1-0.5::speedup" in out and "must be at least 1000" in out


@pytest.mark.parametrize("recovery", ["bn", "none,lsq+bn"])
def test_bn_recovery_on_a_model_without_batchnorm_is_refused_once(pytester, recovery):
    result = _run(pytester, f"--prune-recovery={recovery}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "has no BatchNorm layer" in err and "drop the 'bn' step" in err
    assert err.count("has no BatchNorm layer") == 1


def test_colour_selectivity_is_gated_on_colour_input_only(pytester):
    grey = _run(pytester, "--collect-only", "-q").stdout.str()
    colour = pytester.runpytest("--prune-model=lenet5-colour", "--prune-criteria=l1", "--prune-ratios=0.5",
                                "--collect-only", "-q").stdout.str()
    assert "colour_selectivity" not in grey and "lenet5::l1-0.5::top1" in grey
    assert "lenet5-colour::l1-0.5::colour_selectivity" in colour


def test_prune_ignore_keeps_the_layers_channels_and_is_a_setting(pytester):
    _run(pytester, "--prune-ignore=features.0,classifier.*", "--prune-update-baselines").assert_outcomes(passed=7)
    stored = json.loads(_baseline_file(pytester).read_text())
    assert stored["settings"]["ignore"] == ["classifier.*", "features.0"]
    assert list(stored["provenance"]["plan"]["removed"]) == ["features.3"]  # the only group left
    assert stored["provenance"]["layers"]["features.0"] == [117600, 156]  # all 6 filters kept
    mismatch = _run(pytester)  # without the option: another setting, not a comparison
    mismatch.assert_outcomes(failed=7)
    assert "ignore: baseline ['classifier.*', 'features.0'], this run None" in mismatch.stdout.str()


def test_prune_ignore_pattern_matching_nothing_is_refused_once(pytester):
    result = _run(pytester, "--prune-ignore=feature.0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "--prune-ignore 'feature.0' matches no module of 'lenet5'" in err and err.count("pytest-prune:") == 1


def test_update_keeps_hand_edited_tolerances_and_lists_unused_files(pytester):
    _run(pytester, "--prune-update-baselines").assert_outcomes(passed=7)
    path = _baseline_file(pytester)
    data = json.loads(path.read_text())
    data["checks"]["accuracy_drop"]["tolerance"] = 0.5  # loosened by hand
    del data["checks"]["top1"]  # a check the file lacks gets the default
    data["checks"]["accuracy_drop"]["value"] = 0.9
    path.write_text(json.dumps(data))
    (path.parent / "l1-0.9.json").write_text(path.read_text().replace('"l1-0.5"', '"l1-0.9"'))
    updated = _run(pytester, "--prune-update-baselines", "-v")
    updated.assert_outcomes(passed=7)
    stored = json.loads(path.read_text())
    assert stored["checks"]["accuracy_drop"]["tolerance"] == 0.5
    assert stored["checks"]["accuracy_drop"]["value"] != 0.9  # the value is re-measured
    assert stored["checks"]["top1"]["tolerance"] == 0.01
    out = updated.stdout.str()
    assert "1 baseline file(s) of lenet5" in out and "not produced by these options" in out
    assert "l1-0.9.json" in out and (path.parent / "l1-0.9.json").is_file()  # listed, never deleted


def test_eval_limit_is_a_quick_gate_recorded_as_a_setting(pytester):
    report = pytester.path / "report"
    _run(pytester, "--prune-eval-limit=64", "--prune-update-baselines", f"--prune-report={report}").assert_outcomes(passed=7)
    stored = json.loads(_baseline_file(pytester).read_text())
    assert stored["settings"]["eval_limit"] == 64
    top1 = pd.read_csv(report / "results.csv")["top1_dense"].iloc[0]
    assert round(top1 * 64) == pytest.approx(top1 * 64)  # a fraction of 64 images
    _run(pytester, "--prune-eval-limit=64").assert_outcomes(passed=7)
    mismatch = _run(pytester)
    mismatch.assert_outcomes(failed=7)
    assert "eval_limit: baseline 64, this run None" in mismatch.stdout.str()
    bad = _run(pytester, "--prune-eval-limit=0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR and "at least 1" in bad.stderr.str()
