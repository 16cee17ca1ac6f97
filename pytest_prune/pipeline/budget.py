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

from typing import Callable, Sequence

from torch import nn

from ..criteria.base import Criterion, ScoringContext, Scores, one_shot_scores
from ..groups import ChannelGroup
from ..measure import ModelCount
from ..plan import Allocation, PrunePlan, kept_options, plan_from_scores, resized_removal, round_plan
from .targets import BUDGET_KINDS, Budget, parse_budget  # noqa: F401  (torch-free, re-exported here)

BUDGET_TOLERANCE = 0.02  # documented: a budget is met within 2 % of the dense total
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
    scores: Scores | None = None, round_to: int = 1,
) -> tuple[PrunePlan, float]:
    """The plan of ``criterion`` that meets ``budget``, and the channel fraction it removes.
    With ``round_to`` > 1 every plan searched is rounded first (:func:`~pytest_prune.plan.round_plan`),
    so the budget is met by the rounded plan, not by one that rounding then moves.

    The fraction is searched on the criterion's one-shot scores (``scores``, or scored here once):
    re-ranking them is cheap. A one-shot criterion's plan at that fraction is the searched one, so
    it is scored once; iterative and greedy ones plan once more there, re-scoring as they go. The
    plugin's runs and the benchmarks both plan budgets through this function.
    """
    scores = one_shot_scores(criterion, ctx) if scores is None else scores

    def ranked(ratio: float) -> PrunePlan:
        return round_plan(plan_from_scores(ctx.groups, scores, ratio, allocation), ctx.groups, scores, round_to)

    ratio = ratio_for_budget(budget, cost, ranked)
    if criterion.plans_from_scores:
        plan = ranked(ratio)
    else:
        plan = round_plan(criterion.plan(ctx, ratio, allocation), ctx.groups, scores, round_to)
    return (step_to_budget(plan, budget, cost, scores, round_to) if round_to > 1 else plan), ratio


def step_to_budget(plan: PrunePlan, budget: Budget, cost: PlanCost, scores: Scores, round_to: int) -> PrunePlan:
    """A rounded plan moved toward ``budget`` one group and one multiple of ``round_to`` at a time.
    Why: with counts in steps of ``round_to``, one channel fraction for every group can jump over
    the budget (ResNet-56's 16-channel groups keep 8 or 16, so macs:0.5 landed at 0.36); greedily,
    the single step that brings the kept fraction closest is taken while it brings it closer."""
    gap = cost.kept_fraction(plan, budget.kind) - budget.keep
    while abs(gap) > BUDGET_TOLERANCE / 2:
        best: tuple[float, PrunePlan] | None = None
        for g in cost.groups:
            kept = g.size - len(plan.remove.get(g.name, ()))
            options = kept_options(g.size, round_to)
            index = options.index(kept) + (-1 if gap > 0 else 1) if kept in options else None
            if index is None or not 0 <= index < len(options):
                continue
            moved = PrunePlan({**plan.remove, g.name: resized_removal(
                g, plan.remove.get(g.name, ()), g.size - options[index], scores[g.name])})
            new_gap = cost.kept_fraction(moved, budget.kind) - budget.keep
            if best is None or abs(new_gap) < abs(best[0]):
                best = (new_gap, moved)
        if best is None or abs(best[0]) >= abs(gap):
            break
        gap, plan = best
    return plan


def plan_at_ratio(
    criterion: Criterion, ctx: ScoringContext, ratio: float, allocation: Allocation, round_to: int = 1
) -> PrunePlan:
    """``criterion``'s plan at channel fraction ``ratio``, each group's kept count rounded to a
    multiple of ``round_to`` (by the criterion's one-shot scores: :func:`~pytest_prune.plan.round_plan`)."""
    if round_to <= 1:
        return criterion.plan(ctx, ratio, allocation)
    scores = one_shot_scores(criterion, ctx)
    if criterion.plans_from_scores and type(criterion).plan is Criterion.plan:  # scored once
        plan = plan_from_scores(ctx.groups, scores, ratio, allocation)
    else:
        plan = criterion.plan(ctx, ratio, allocation)
    return round_plan(plan, ctx.groups, scores, round_to)
