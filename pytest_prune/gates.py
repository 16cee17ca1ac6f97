"""Gate checks: which numbers are compared with the baseline, in which direction, how strictly.

A check passes when the measured value is no worse than the baseline by more than its tolerance:
``measured <= baseline + tolerance`` for lower-is-better checks, ``measured >= baseline - tolerance``
for higher-is-better ones. Tolerances are written into each baseline file on creation (from the
defaults below) and can be edited there per value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

from .baselines import CheckBaseline


@dataclass(frozen=True)
class CheckSpec:
    name: str
    better: Literal["lower", "higher"]
    tolerance: float
    meaning: str


CHECKS: dict[str, CheckSpec] = {
    c.name: c
    for c in (
        # One CPU-vs-CPU float difference can flip a sample or two; 1 point of top-1 is a regression.
        CheckSpec("accuracy_drop", "lower", 0.01, "dense top-1 minus compressed top-1 (fraction)"),
        # MACs and parameter counts are exact integers: any loss of saving is a regression.
        CheckSpec("macs_reduction", "higher", 1e-9, "1 - compressed MACs / dense MACs"),
        CheckSpec("params_reduction", "higher", 1e-9, "1 - compressed params / dense params"),
        # float32 round-off of a reordered sum stays far below 1e-5 on logits of these sizes.
        CheckSpec(
            "surgery_equivalence",
            "lower",
            1e-5,
            "max |pruned(x) - masked dense(x)| over evaluation inputs",
        ),
    )
}


@dataclass(frozen=True)
class GateOutcome:
    check: str
    measured: float
    baseline: float
    tolerance: float
    passed: bool

    def explain(self) -> str:
        spec = CHECKS[self.check]
        limit = (
            self.baseline + self.tolerance if spec.better == "lower" else self.baseline - self.tolerance
        )
        relation = "at most" if spec.better == "lower" else "at least"
        verdict = "ok" if self.passed else "REGRESSION"
        return (
            f"{self.check} ({spec.meaning}): measured {self.measured:.6g}, baseline "
            f"{self.baseline:.6g}, tolerance {self.tolerance:.3g} ({spec.better} is better; "
            f"must be {relation} {limit:.6g}) -> {verdict}"
        )


def compare(check: str, measured: float, baseline: CheckBaseline) -> GateOutcome:
    spec = CHECKS[check]
    if spec.better == "lower":
        passed = measured <= baseline.value + baseline.tolerance
    else:
        passed = measured >= baseline.value - baseline.tolerance
    return GateOutcome(check, measured, baseline.value, baseline.tolerance, passed)


def new_baselines(measured: Mapping[str, float]) -> dict[str, CheckBaseline]:
    """Baseline entries for freshly measured values, with the default tolerances."""
    return {k: CheckBaseline(float(v), CHECKS[k].tolerance) for k, v in measured.items()}
