import pytest

from pytest_prune.gating.baselines import CheckBaseline
from pytest_prune.gating.checks import CHECKS
from pytest_prune.gating.verdict import compare, new_baselines


@pytest.mark.parametrize(
    "check, measured, value, tolerance, passed",
    [
        ("accuracy_drop", 0.02, 0.015, 0.01, True),
        ("accuracy_drop", 0.026, 0.015, 0.01, False),
        ("macs_reduction", 0.50, 0.50, 0.0, True),
        ("macs_reduction", 0.49, 0.50, 0.005, False),
        ("surgery_equivalence", 3e-6, 0.0, 1e-5, True),
        ("surgery_equivalence", 3e-4, 0.0, 1e-5, False),
    ],
)
def test_compare_respects_direction_and_tolerance(check, measured, value, tolerance, passed):
    outcome = compare(check, measured, CheckBaseline(value, tolerance))
    assert outcome.passed is passed
    text = outcome.explain()
    assert f"measured {measured:.6g}" in text and f"baseline {value:.6g}" in text
    assert ("REGRESSION" in text) is (not passed)


def test_new_baselines_take_default_tolerances():
    made = new_baselines({"accuracy_drop": 0.1, "macs_reduction": 0.5})
    assert made["accuracy_drop"] == CheckBaseline(0.1, CHECKS["accuracy_drop"].tolerance)
    assert made["macs_reduction"].value == 0.5


def test_an_update_keeps_the_stored_entry_of_a_check_it_did_not_measure():
    """An update without --prune-export must not delete what a run with it wrote."""
    previous = {"export_equivalence": CheckBaseline(2e-7, 1e-4), "top1": CheckBaseline(0.9, 0.02),
                "no_such_check": CheckBaseline(1.0, 0.0)}
    made = new_baselines({"top1": 0.95}, previous)
    assert made == {"export_equivalence": CheckBaseline(2e-7, 1e-4), "top1": CheckBaseline(0.95, 0.02)}
