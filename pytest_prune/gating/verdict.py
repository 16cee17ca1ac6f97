"""The verdict: a measured value against its baseline, and new baselines from measurements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .baselines import CheckBaseline
from .checks import CHECKS, spec_of


@dataclass(frozen=True)
class GateOutcome:
    check: str
    measured: float
    baseline: float
    tolerance: float
    passed: bool

    def explain(self) -> str:
        spec = spec_of(self.check)
        if spec.better == "either" and self.tolerance == 0:
            bound = f"exactly {self.baseline:.12g}"
        elif spec.better == "either":
            bound = f"within {self.baseline - self.tolerance:.6g} .. {self.baseline + self.tolerance:.6g}"
        elif spec.better == "lower":
            bound = f"at most {self.baseline + self.tolerance:.6g}"
        else:
            bound = f"at least {self.baseline - self.tolerance:.6g}"
        verdict = "ok" if self.passed else "REGRESSION"
        return (
            f"{self.check} ({spec.meaning}): measured {self.measured:.6g}, baseline "
            f"{self.baseline:.6g}, tolerance {self.tolerance:.3g} ({_DIRECTION[spec.better]}; "
            f"must be {bound}) -> {verdict}"
        )


_DIRECTION = {"lower": "lower is better", "higher": "higher is better", "either": "any move is a change"}
DIRECTION = _DIRECTION  # public: the report's verdict table states each check's direction too


def compare(check: str, measured: float, baseline: CheckBaseline) -> GateOutcome:
    spec = spec_of(check)
    if spec.better == "either":
        passed = abs(measured - baseline.value) <= baseline.tolerance
    elif spec.better == "lower":
        passed = measured <= baseline.value + baseline.tolerance
    else:
        passed = measured >= baseline.value - baseline.tolerance
    return GateOutcome(check, measured, baseline.value, baseline.tolerance, passed)


def new_baselines(
    measured: Mapping[str, float], previous: Mapping[str, CheckBaseline] | None = None
) -> dict[str, CheckBaseline]:
    """Baseline entries for freshly measured values: the tolerance already stored for a check
    (perhaps edited by hand) is kept; a check new to the file gets the default. A stored check
    this run did not measure (an opt-in one, such as ``--prune-export``) keeps its entry: an update
    without the option must not delete what a run with it wrote."""
    previous = previous or {}
    fresh = {
        k: CheckBaseline(float(v), previous[k].tolerance if k in previous else CHECKS[k].tolerance)
        for k, v in measured.items()
        if k in CHECKS
    }
    return {**{k: b for k, b in previous.items() if k in CHECKS and k not in fresh}, **fresh}
