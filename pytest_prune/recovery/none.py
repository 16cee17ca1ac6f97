"""``none``: measure the pruned model as surgery left it (one-shot pruning)."""

from __future__ import annotations

from .base import RecoveryContext, RecoveryStep, StepReport
from .registry import register


@register
class NoRecovery(RecoveryStep):
    """Leaves the model unchanged; the reference every other recovery is compared with."""

    name = "none"
    summary = "no recovery: the one-shot pruned model"
    cost = "nothing"

    def apply(self, ctx: RecoveryContext) -> StepReport:
        return StepReport(self.spec, notes=["no recovery: the model is measured as surgery left it"])
