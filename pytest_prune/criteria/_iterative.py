"""Prune a little, re-score, repeat: the schedule shared by iterative and greedy criteria.

``taylor`` (Molchanov et al. 2017; Zhang et al. 2021) re-estimates its scores a few times while
channels go; ``car`` (Abbasi-Asl & Yu 2017) re-scores after every removal. Both remove as many
channels as one-shot ranking would at the same ratio and allocation (the same count per group under
``layerwise``, the same total and floors under ``global``); which channels differs, since each round
is chosen with the earlier removals already masked.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from ..errors import SpecError
from ..groups import ChannelGroup
from ..plan import Allocation, PrunePlan, check_ratio, lowest, plan_global, removal_count
from .base import Scores

Rescore = Callable[[PrunePlan], Scores]  # scores of every group with ``plan`` already removed


def _share(total: int, step: int, steps: int) -> int:
    """The cumulative count after ``step`` of ``steps`` (rounded half up, exact at the end)."""
    return (2 * total * step + steps) // (2 * steps)


def _without_removed(scores: Scores, plan: PrunePlan) -> Scores:
    """Removed channels score -inf, so that ranking keeps them removed and picks among the rest."""
    out = {}
    for name, s in scores.items():
        s = s.detach().double().cpu().clone()
        gone = list(plan.remove.get(name, ()))
        if gone:
            s[gone] = -math.inf
        out[name] = s
    return out


def iterative_plan(
    groups: Sequence[ChannelGroup],
    ratio: float,
    allocation: Allocation,
    rescore: Rescore,
    steps: int,
    start: PrunePlan | None = None,
) -> PrunePlan:
    """Remove the target in ``steps`` rounds, calling ``rescore(plan so far)`` before each.

    ``start`` is a plan already removed (it is kept; its channels count toward the target of their
    groups). Rounds that would remove nothing are skipped without re-scoring.
    """
    check_ratio(ratio)
    steps = max(1, int(steps))
    plan = start or PrunePlan({g.name: () for g in groups})
    if allocation == "layerwise":
        targets = {g.name: removal_count(g.size, ratio) for g in groups}
        for step in range(1, steps + 1):
            counts = {g.name: max(len(plan.remove.get(g.name, ())), _share(targets[g.name], step, steps)) for g in groups}
            if all(counts[g.name] == len(plan.remove.get(g.name, ())) for g in groups):
                continue
            scores = _without_removed(rescore(plan), plan)
            plan = PrunePlan({g.name: lowest(scores[g.name], counts[g.name]) for g in groups})
        return plan
    if allocation == "global":
        total = sum(g.size for g in groups)
        budget = int(math.floor(ratio * total + 0.5))
        for step in range(1, steps + 1):
            count = _share(budget, step, steps)
            if count <= plan.count():
                continue
            scores = _without_removed(rescore(plan), plan)
            plan = plan_global(groups, scores, count / total)
        return plan
    raise SpecError(f"unknown allocation {allocation!r}: use layerwise or global")


def steps_for(count: int, per_step: int) -> int:
    """Rounds needed to remove ``count`` channels ``per_step`` at a time."""
    return max(1, -(-count // max(1, per_step)))

