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
    better: Literal["lower", "higher", "either"]  # "either": a move either way is a change
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
        # Integrated-gradients maps of 16 images; a mean rank correlation is stable to ~0.02.
        CheckSpec(
            "attribution_retention",
            "higher",
            0.05,
            "mean Spearman correlation of dense and compressed attribution maps",
        ),
        # Which filters go is a finding, not a score: a change either way is worth a look.
        CheckSpec(
            "colour_selectivity",
            "either",
            0.1,
            "share of colour-selective filters among the removed first-layer filters",
        ),
    )
}
# Checked against --prune-min-speedup, not against a baseline: latency is machine-specific.
SPEEDUP = CheckSpec("speedup", "higher", 0.0, "dense latency / compressed latency (CPU, median)")


@dataclass(frozen=True)
class GateOutcome:
    check: str
    measured: float
    baseline: float
    tolerance: float
    passed: bool

    def explain(self) -> str:
        spec = spec_of(self.check)
        if spec.better == "either":
            bound = f"within {self.baseline - self.tolerance:.6g} .. {self.baseline + self.tolerance:.6g}"
        elif spec.better == "lower":
            bound = f"at most {self.baseline + self.tolerance:.6g}"
        else:
            bound = f"at least {self.baseline - self.tolerance:.6g}"
        verdict = "ok" if self.passed else "REGRESSION"
        return (
            f"{self.check} ({spec.meaning}): measured {self.measured:.6g}, baseline "
            f"{self.baseline:.6g}, tolerance {self.tolerance:.3g} ({spec.better} is better; "
            f"must be {bound}) -> {verdict}"
        )


def spec_of(check: str) -> CheckSpec:
    return SPEEDUP if check == SPEEDUP.name else CHECKS[check]


def compare(check: str, measured: float, baseline: CheckBaseline) -> GateOutcome:
    spec = spec_of(check)
    if spec.better == "either":
        passed = abs(measured - baseline.value) <= baseline.tolerance
    elif spec.better == "lower":
        passed = measured <= baseline.value + baseline.tolerance
    else:
        passed = measured >= baseline.value - baseline.tolerance
    return GateOutcome(check, measured, baseline.value, baseline.tolerance, passed)


def new_baselines(measured: Mapping[str, float]) -> dict[str, CheckBaseline]:
    """Baseline entries for freshly measured values, with the default tolerances."""
    return {k: CheckBaseline(float(v), CHECKS[k].tolerance) for k, v in measured.items() if k in CHECKS}
