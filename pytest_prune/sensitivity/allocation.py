"""The ``sensitivity`` allocation: how many channels each group loses, from its sensitivity table.

Greedy over the table (AIMET's greedy per-layer ratio selection, in channel steps): every group
starts at 0 removed (the floor); each step removes one more channel from the group where it costs
the least per unit of the target's resource saved, the cost read off the group's curve by linear
interpolation between the measured fractions. The cost is the calibration cross-entropy gained
(``by="loss"``, the default; ties: the top-1 lost, then the group that comes first) or the
calibration top-1 lost (``by="top1"``; ties: the loss). Why loss: on 512 images top-1 moves in
steps of 0.2 points and sits at the dense value for most groups' first fractions, so many steps
tie; the loss separates them. Measured on cifar-resnet20, ``l1`` + ``lsq``, exact 932, against
every group losing the same fraction: by loss +3.86 points (paired SE 1.15) at ``macs:0.59`` and
+3.65 (1.44) at ``macs:0.45``; by top-1 +2.90 (1.22) and +0.00 (1.45).

A group never goes past its cap, ``removal_count(size, cap)`` channels (:data:`DEFAULT_CAP` = 0.9;
never beyond the largest fraction measured, so nothing is extrapolated; at least one channel always
stays). The greedy's steps form one path from the dense model to every group at its cap; the plan is the point on that path
that meets the target, found by bisection with the exact count of
:class:`~pytest_prune.pipeline.budget.PlanCost`:

* ``macs:F`` / ``params:F``: the resource is the group's MACs (parameters) saved per channel
  when it alone is pruned (the table's column; exact, a group's count is linear in its channels),
  and the point kept is the one whose kept fraction is closest to ``F``; two groups that feed one
  layer save less together than alone (its count is bilinear), which the exact count at the end
  accounts for;
* a plain channel fraction ``r``: the resource is channels, and the point is the one removing
  ``round(r × all channels)``: the ratio keeps its meaning (that fraction of all channels goes),
  the table decides where.

Inside a group the criterion decides which channels go (its lowest scores), so the allocation
works for any criterion; a greedy or iterative criterion is ranked by its one-shot scores here.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Mapping, Sequence

import torch

from ..errors import SpecError
from ..groups import ChannelGroup
from ..plan import PrunePlan, lowest, removal_count, round_plan
from .analysis import DEFAULT_FRACTIONS, DEFAULT_IMAGES, SensitivityPoint, SensitivityTable, analyse

DEFAULT_CAP = 0.9  # a group keeps at least 10 % of its channels under this allocation
MEASURES = ("top1", "loss")  # what a step costs: calibration top-1 lost, or cross-entropy gained
DEFAULT_MEASURE = "loss"  # see the module docstring: measured better than top1


def _interpolate(curve: list[SensitivityPoint], removed: int) -> tuple[float, float]:
    """(top-1, loss) at ``removed`` channels, linear between the measured points."""
    for a, b in zip(curve, curve[1:]):
        if a.removed <= removed <= b.removed:
            t = (removed - a.removed) / (b.removed - a.removed)
            return a.top1 + t * (b.top1 - a.top1), a.loss + t * (b.loss - a.loss)
    return curve[-1].top1, curve[-1].loss


def _resource_per_channel(curve: list[SensitivityPoint], kind: str) -> float:
    last = curve[-1]
    if kind == "channels":
        return 1.0
    saved = last.macs_saved if kind == "macs" else last.params_saved
    return saved / last.removed if last.removed else 0.0


def greedy_path(
    groups: Sequence[ChannelGroup], table: SensitivityTable, kind: str, cap: float = DEFAULT_CAP,
    by: str = DEFAULT_MEASURE,
) -> list[int]:
    """The greedy's steps, in order: the index (into ``groups``) of the group that loses one more
    channel at each step, until every group is at its cap."""
    heap: list[tuple[float, float, int, int]] = []
    curves, units, caps = {}, {}, {}
    counts = [0] * len(groups)

    def push(gi: int) -> None:
        c = counts[gi]
        if c >= caps[gi]:
            return
        top1_now, loss_now = _interpolate(curves[gi], c)
        top1_next, loss_next = _interpolate(curves[gi], c + 1)
        # an accuracy that rises with pruning is sampling noise: it costs nothing, not less
        drop = max(top1_now - top1_next, 0.0) / units[gi]
        rise = (loss_next - loss_now) / units[gi]
        heapq.heappush(heap, (drop, rise, gi, c) if by == "top1" else (max(rise, 0.0), drop, gi, c))

    for gi, g in enumerate(groups):
        curves[gi] = table.curve(g.name)
        units[gi] = _resource_per_channel(curves[gi], kind)
        measured = curves[gi][-1].removed
        caps[gi] = min(removal_count(g.size, cap), measured) if units[gi] > 0 else 0
        push(gi)
    path = []
    while heap:
        *_, gi, _ = heapq.heappop(heap)
        counts[gi] += 1
        path.append(gi)
        push(gi)
    return path


def _plan_at(groups, scores, path: list[int], steps: int, round_to: int = 1) -> PrunePlan:
    """The plan after the first ``steps`` steps, every kept count rounded to a multiple of
    ``round_to`` (``--prune-round-to``; rounding is monotone, so the path stays ordered)."""
    counts = Counter(path[:steps])
    plan = PrunePlan({g.name: lowest(scores[g.name], counts.get(gi, 0)) for gi, g in enumerate(groups)})
    return round_plan(plan, groups, scores, round_to)


def allocate(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    table: SensitivityTable,
    target,  # pipeline.budget.Budget, or a channel fraction (float)
    cost,  # pipeline.budget.PlanCost
    cap: float = DEFAULT_CAP,
    by: str = DEFAULT_MEASURE,
    round_to: int = 1,
) -> PrunePlan:
    """The plan on the greedy path that meets ``target`` (see the module's docstring)."""
    if not 0.0 < cap < 1.0:
        raise SpecError(f"the sensitivity allocation's cap must lie in (0, 1), got {cap:g}; e.g. 0.9")
    if by not in MEASURES:
        raise SpecError(f"the sensitivity allocation measures a step by {' or '.join(MEASURES)}, not {by!r}")
    if isinstance(target, float):
        kind = "channels"
        want = removal_count(sum(g.size for g in groups), target)

        def gap(steps: int) -> float:  # > 0 while too few channels are removed
            return want - _plan_at(groups, scores, path, steps, round_to).count()
    else:
        kind = target.kind

        def gap(steps: int) -> float:  # > 0 while too much is kept
            return cost.kept_fraction(_plan_at(groups, scores, path, steps, round_to), kind) - target.keep

    path = greedy_path(groups, table, kind, cap, by)
    lo, hi = 0, len(path)  # the first step count whose gap is ≤ 0 lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if gap(mid) > 0:
            lo = mid + 1
        else:
            hi = mid
    best = lo if lo == 0 or abs(gap(lo)) <= abs(gap(lo - 1)) else lo - 1
    return _plan_at(groups, scores, path, best, round_to)


def plan_by_sensitivity(
    criterion,
    ctx,
    target,
    cost,
    *,
    recovery: str = "none",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    images: int = DEFAULT_IMAGES,
    cap: float = DEFAULT_CAP,
    by: str = DEFAULT_MEASURE,
    round_to: int = 1,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
    table: SensitivityTable | None = None,
) -> tuple[PrunePlan, SensitivityTable]:
    """``criterion``'s plan for ``target`` under the sensitivity allocation, and the table it used.

    ``ctx`` is the criterion's :class:`~pytest_prune.criteria.base.ScoringContext`; the analysis
    runs on ``batches`` (default ``ctx.batches``: a data-free criterion's context has none, so pass
    the calibration batches). Pass ``scores`` and ``table`` to reuse them across targets.
    """
    scores = criterion.scores(ctx) if scores is None else scores
    if table is None:
        table = analyse(ctx.model, ctx.groups, scores, ctx.batches if batches is None else batches, cost,
                        fractions=fractions, images=images, recovery=recovery,
                        criterion=criterion.name, seed=ctx.seed)
    return allocate(ctx.groups, scores, table, target, cost, cap, by, round_to), table
