"""Prune a little, re-score, repeat: the schedule shared by iterative and greedy criteria.

``taylor`` (Molchanov et al. 2017; Zhang et al. 2021) re-estimates its scores a few times while
channels go; ``car`` (Abbasi-Asl & Yu 2017) re-scores after every removal. Both remove as many
channels as one-shot ranking would at the same ratio and allocation (the same count per group under
``layerwise``, the same total and floors under ``global``); which channels differs, since each round
is chosen with the earlier removals already masked. :func:`iterative_plan` sizes its rounds by the
target; :class:`NestedGreedy` rounds on a fixed ratio grid, so that one sequence serves every ratio.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from ..digests import tensors_digest
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



def grid_round(ratio: float, grid: int) -> int:
    """The round of a ``grid``-step ratio schedule that reaches ``ratio``: the smallest k with
    k/grid ≥ ratio (compared as the same float division, so 0.3 on a grid of 10 is round 3)."""
    k = max(0, math.ceil(ratio * grid))
    while k > 0 and (k - 1) / grid >= ratio:
        k -= 1
    while k / grid < ratio:
        k += 1
    return k


GroupRescore = Callable[[PrunePlan, Sequence[ChannelGroup]], Scores]  # scores of these groups, plan removed


class _GridRounds:
    """The rounds of one set of groups on the ratio grid (see :class:`NestedGreedy`)."""

    def __init__(self, groups: Sequence[ChannelGroup], allocation: Allocation, grid: int):
        self.groups, self.allocation, self.grid = list(groups), allocation, grid
        # rounds[k-1]: (removed before round k, the scores of round k, or None when it removes nothing)
        self.rounds: list[tuple[PrunePlan, Scores | None]] = []
        self.rescored = 0

    def _cut(self, scores: Scores, ratio: float) -> PrunePlan:
        if self.allocation == "layerwise":
            return PrunePlan({g.name: lowest(scores[g.name], removal_count(g.size, ratio)) for g in self.groups})
        return plan_global(self.groups, scores, ratio)

    def _moves(self, before: PrunePlan, ratio: float) -> bool:
        """Would the cut at ``ratio`` remove anything beyond ``before``?"""
        if self.allocation == "layerwise":
            return any(removal_count(g.size, ratio) > len(before.remove.get(g.name, ())) for g in self.groups)
        total = sum(g.size for g in self.groups)
        return int(math.floor(ratio * total + 0.5)) > before.count()

    def plan(self, ratio: float, rescore: GroupRescore) -> PrunePlan:
        last = grid_round(ratio, self.grid)
        if last == 0:
            return PrunePlan({g.name: () for g in self.groups})
        while len(self.rounds) < last:
            k = len(self.rounds) + 1
            if self.rounds:  # the state the previous round left: its cut at its own grid ratio
                before, scores = self.rounds[-1]
                removed = before if scores is None else self._cut(scores, (k - 1) / self.grid)
            else:
                removed = PrunePlan({g.name: () for g in self.groups})
            # a round scores when its cut at k/grid removes something, whatever ratio asked for it:
            # what is stored must serve every later ratio of the same round
            fresh = None
            if self._moves(removed, k / self.grid):
                fresh = _without_removed(rescore(removed, self.groups), removed)
                self.rescored += 1
            self.rounds.append((removed, fresh))
        before, scores = self.rounds[last - 1]
        return before if scores is None else self._cut(scores, ratio)


class NestedGreedy:
    """One greedy removal sequence that serves every ratio: the plan at a smaller ratio is always
    contained in the plan at a larger one, and asking for a larger ratio later only adds rounds.

    The schedule is a fixed grid of ratios k/``grid`` (k = 1, 2, …), whatever ratios are asked;
    round k re-scores the remaining channels with what the rounds before it removed, then cuts at
    k/grid:

    * ``layerwise``: each group on its own, the rest of the network intact (the layer-by-layer
      greedy of Abbasi-Asl & Yu, one layer at a time): round k scores the group's remaining
      channels with its earlier removals masked, and the group drops its lowest until it has lost
      ``removal_count(size, k/grid)``;
    * ``global``: one sequence for the network: round k scores every group's remaining channels
      against the same state, then the lowest across groups go until ``floor(k/grid·total + ½)``
      are gone, under :func:`~pytest_prune.plan.plan_global`'s floor per group.

    The plan at ratio r is round k(r) = :func:`grid_round` cut at r instead of k/grid: the rounds
    before it never depend on r, hence the nesting. Rounds that would remove nothing are not scored.
    Why not :func:`iterative_plan`'s schedule: there the rounds' sizes depend on the target (a 0.3
    run and a 0.7 run re-score at different points), and a layer's choice depends on what the
    earlier layers lost at that ratio, so no run can serve another.
    """

    def __init__(self, groups: Sequence[ChannelGroup], allocation: Allocation, grid: int):
        if allocation not in ("layerwise", "global"):
            raise SpecError(f"unknown allocation {allocation!r}: use layerwise or global")
        if not isinstance(grid, int) or grid < 1:
            raise SpecError(f"a greedy schedule needs a whole number of rounds per unit ratio (>= 1), got grid={grid!r}")
        units = [[g] for g in groups] if allocation == "layerwise" else [list(groups)]
        self.units = [_GridRounds(unit, allocation, grid) for unit in units]

    @property
    def rescored(self) -> int:
        """Rescore calls made so far (one per group and round under ``layerwise``)."""
        return sum(u.rescored for u in self.units)

    def plan(self, ratio: float, rescore: GroupRescore) -> PrunePlan:
        """The plan at ``ratio``; ``rescore(removed, groups)`` is called only for rounds no earlier
        call has scored, and must return the scores of ``groups`` with ``removed`` masked."""
        check_ratio(ratio)
        remove: dict[str, tuple[int, ...]] = {}
        for unit in self.units:
            remove.update(unit.plan(ratio, rescore).remove)
        return PrunePlan(remove)


def fingerprint(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """SHA-256 of every parameter and buffer of ``model`` and every calibration tensor, in order:
    what a stored greedy sequence was computed from (a change anywhere gives another digest)."""
    tensors = [(n, t) for n, t in model.named_parameters()] + [(n, t) for n, t in model.named_buffers()]
    tensors += [(f"batch{i}.{j}", t) for i, pair in enumerate(batches) for j, t in enumerate(pair)]
    return tensors_digest(tensors)


SEQUENCES_KEPT = 4  # greedy sequences kept per process: a run asks for one per (model, allocation)
_SEQUENCES: OrderedDict[tuple, NestedGreedy] = OrderedDict()


def shared_sequence(key: tuple, groups: Sequence[ChannelGroup], allocation: Allocation, grid: int) -> NestedGreedy:
    """The sequence stored under ``key`` (which must name everything the scores depend on: the
    model, a :func:`fingerprint` of its weights and data, the criterion's settings), else a new one.

    Process-wide, not per criterion instance: the pipeline builds a fresh criterion for each ratio
    (``get_criterion``), and it is across those calls that the sequence is reused. Only scores and
    plans are kept (no model, no activations), the least recently used dropped beyond SEQUENCES_KEPT.
    """
    if key in _SEQUENCES:
        _SEQUENCES.move_to_end(key)
        return _SEQUENCES[key]
    sequence = _SEQUENCES[key] = NestedGreedy(groups, allocation, grid)
    while len(_SEQUENCES) > SEQUENCES_KEPT:
        _SEQUENCES.popitem(last=False)
    return sequence
