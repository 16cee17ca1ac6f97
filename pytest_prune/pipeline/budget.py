"""Budgets: prune until a fraction of the MACs (or parameters) is kept, not a channel fraction.

``--prune-ratios`` accepts ``macs:0.5`` ("keep half the MACs") and ``params:0.6`` beside plain
channel fractions. A budget is met by searching the channel fraction whose plan keeps the target,
using an exact count of what a plan removes, computed from the channel groups without surgery:

* a conv or linear layer keeps ``MACs × (out kept / out) × (in kept / in)`` — its work is bilinear
  in its output and input widths (a depthwise conv, whose input *is* its output, scales once);
* its weight scales the same way; a bias or a BatchNorm scales with its outputs.

The search is a bisection over the fraction (the kept MACs fall monotonically as it grows); the
result lands on the closest reachable plan, which for networks of many channels is within
:data:`BUDGET_TOLERANCE` of the target. The gates report the MACs measured on the pruned model, not
this estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn

from ..criteria.base import Criterion, ScoringContext, Scores
from ..errors import SpecError
from ..groups import ChannelGroup
from ..measure import ModelCount
from ..plan import Allocation, PrunePlan, plan_from_scores

BUDGET_TOLERANCE = 0.02  # documented: a budget is met within 2 % of the dense total
BUDGET_KINDS = ("macs", "params")


@dataclass(frozen=True)
class Budget:
    kind: str  # "macs" or "params"
    keep: float  # fraction of the dense total to keep

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.keep:g}"


def parse_budget(text: str) -> Budget | None:
    """``macs:0.5`` → Budget; a plain number → None (a channel fraction)."""
    kind, sep, value = text.partition(":")
    if not sep:
        return None
    if kind not in BUDGET_KINDS:
        raise SpecError(
            f"--prune-ratios: {text!r} is neither a channel fraction nor a budget; write 0.5, "
            "macs:0.5 or params:0.6"
        )
    try:
        keep = float(value)
    except ValueError:
        raise SpecError(f"--prune-ratios: {text!r}: {value!r} is not a number") from None
    if not 0.0 < keep < 1.0:
        raise SpecError(f"--prune-ratios: {text!r}: the kept fraction must lie in (0, 1)")
    return Budget(kind, keep)


class PlanCost:
    """The MACs and parameters a plan keeps, from the dense counts and the groups."""

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup], dense: ModelCount):
        self.dense = dense
        self.groups = groups
        self._modules = dict(model.named_modules())
        self._layers = dense.by_layer()

    def _removed_fraction(self, plan: PrunePlan) -> dict[tuple[str, str], float]:
        removed: dict[tuple[str, str], int] = {}
        for g in self.groups:
            positions = plan.remove.get(g.name, ())
            for member in g.members:
                count = sum(len(member.indices[p]) for p in positions)
                key = (member.module, member.role)
                removed[key] = removed.get(key, 0) + count
        out = {}
        for (name, role), count in removed.items():
            module = self._modules[name]
            weight = getattr(module, "weight", None)
            if weight is None or weight.dim() == 0:
                continue
            # channels counted along the layer's input, not its weight: a grouped conv's weight
            # holds one group's inputs
            if role == "producer":
                size = getattr(module, "out_channels", weight.shape[0])
            else:
                size = getattr(module, "in_channels", weight.shape[1])
            if role == "producer" and isinstance(module, nn.modules.batchnorm._BatchNorm):
                size = module.num_features
            out[(name, role)] = count / size
        return out

    def kept(self, plan: PrunePlan) -> tuple[int, int]:
        """(MACs, parameters) of the model ``plan`` would leave."""
        frac = self._removed_fraction(plan)
        macs = 0.0
        params = float(self.dense.params)
        for layer in self.dense.layers:
            module = self._modules[layer.name]
            out_keep = 1.0 - frac.get((layer.name, "producer"), 0.0)
            in_keep = 1.0 - frac.get((layer.name, "consumer"), 0.0)
            depthwise = (
                isinstance(module, nn.modules.conv._ConvNd)
                and module.groups > 1
                and module.groups == module.in_channels
            )
            scale = out_keep if depthwise else out_keep * in_keep
            macs += layer.macs * scale
            weight = getattr(module, "weight", None)
            bias = getattr(module, "bias", None)
            w = weight.numel() if weight is not None else 0
            b = bias.numel() if bias is not None else 0
            other = layer.params - w - b
            params -= w * (1.0 - scale) + b * (1.0 - out_keep) + other * 0.0
        return int(round(macs)), int(round(params))

    def kept_fraction(self, plan: PrunePlan, kind: str) -> float:
        macs, params = self.kept(plan)
        return macs / self.dense.macs if kind == "macs" else params / self.dense.params


def ratio_for_budget(
    budget: Budget, cost: PlanCost, plan_at: Callable[[float], PrunePlan], steps: int = 30
) -> float:
    """The channel fraction whose plan keeps ``budget.keep`` of the total, by bisection."""
    lo, hi = 0.0, 0.99
    best, best_gap = 0.0, float("inf")
    for _ in range(steps):
        mid = (lo + hi) / 2
        kept = cost.kept_fraction(plan_at(mid), budget.kind)
        gap = abs(kept - budget.keep)
        if gap < best_gap:
            best, best_gap = mid, gap
        if kept > budget.keep:
            lo = mid
        else:
            hi = mid
    return best


def plan_for_budget(
    criterion: Criterion, ctx: ScoringContext, budget: Budget, cost: PlanCost, allocation: Allocation,
    scores: Scores | None = None,
) -> tuple[PrunePlan, float]:
    """The plan of ``criterion`` that meets ``budget``, and the channel fraction it removes.

    The fraction is searched on the criterion's one-shot scores (``scores``, or scored here once):
    re-ranking them is cheap. A one-shot criterion's plan at that fraction is the searched one, so
    it is scored once; iterative and greedy ones plan once more there, re-scoring as they go. The
    plugin's runs and the benchmarks both plan budgets through this function.
    """
    scores = criterion.scores(ctx) if scores is None else scores

    def ranked(ratio: float) -> PrunePlan:
        return plan_from_scores(ctx.groups, scores, ratio, allocation)

    ratio = ratio_for_budget(budget, cost, ranked)
    plan = ranked(ratio) if criterion.plans_from_scores else criterion.plan(ctx, ratio, allocation)
    return plan, ratio
