"""Gating: which numbers are checked and how (:mod:`.checks`), the baseline store
(:mod:`.baselines`), and the verdict (:mod:`.verdict`). No torch import: the plugin reads and
judges baselines without the pipeline."""

from .baselines import Baseline, BaselineStore, CheckBaseline
from .checks import CHECKS, SPEEDUP, Check, spec_of
from .verdict import GateOutcome, compare, new_baselines

__all__ = [
    "Baseline", "BaselineStore", "CHECKS", "Check", "CheckBaseline", "GateOutcome", "SPEEDUP",
    "compare", "new_baselines", "spec_of",
]
