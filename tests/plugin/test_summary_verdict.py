"""The summary's gates column tells a regression (a value judged against its baseline) from a
check that could not be judged (an unreadable baseline, a method that failed to measure)."""

from pytest_prune.plugin.summary import _verdict


def test_a_regression_and_an_unjudged_check_are_named_apart():
    checks = {"top1": "failed", "macs_reduction": "passed", "export_equivalence": "failed"}
    verdicts = {
        "top1": {"measured": 0.8, "baseline": 0.9, "message": "top1 ... REGRESSION"},
        "export_equivalence": {"message": "TraceError: the exporter refused aten::foo"},
    }
    assert _verdict(checks, verdicts) == "FAIL (top1); ERROR (export_equivalence: TraceError)"


def test_every_check_unjudged_for_one_cause_is_one_error():
    checks = {c: "failed" for c in ("top1", "accuracy_drop", "macs_reduction")}
    verdicts = {c: {"message": "BaselineError: baseline b.json cannot be read (...)"} for c in checks}
    assert _verdict(checks, verdicts) == "ERROR (every check: BaselineError)"


def test_passes_writes_and_regressions_alone_read_as_before():
    assert _verdict({"top1": "passed", "macs_reduction": "passed"}, {}) == "pass"
    assert _verdict({"top1": "written"}, {}) == "baseline written"
    judged = {"top1": {"measured": 0.5}, "accuracy_drop": {"measured": 0.4}}
    assert _verdict({"top1": "failed", "accuracy_drop": "failed"}, judged) == "FAIL (accuracy_drop, top1)"
    assert _verdict({"top1": "error"}, {"top1": {"message": "it broke"}}) == "ERROR (top1: not judged)"
