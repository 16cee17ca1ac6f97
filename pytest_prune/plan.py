"""Plans: which channels of which group go, from scores and a budget.

A :class:`PrunePlan` maps each channel group's name to the positions (``0 .. group.size - 1``) of
the channels to remove. Allocation turns per-channel scores into a plan:

* ``layerwise`` (the default): every group loses the same fraction of its channels, the lowest
  scores first;
* ``global``: one ranking across all groups (scores must be comparable across layers, as CPMC's
  are by construction), with a floor of channels kept in every group.

Every group keeps at least one channel: a network with an empty layer is not a pruned network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import torch

from .allocations import ALLOCATIONS
from .pipeline.targets import check_ratio  # noqa: F401  (re-exported: criteria import it from here)
from .errors import SpecError
from .groups import ChannelGroup

Allocation = Literal["layerwise", "global"]
GLOBAL_FLOOR = 0.1  # global allocation keeps at least this fraction (and one channel) per group


@dataclass(frozen=True)
class PrunePlan:
    """The channels to remove, by group name, as positions within the group."""

    remove: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def count(self) -> int:
        return sum(len(v) for v in self.remove.values())

    def kept(self, group: ChannelGroup) -> tuple[int, ...]:
        gone = set(self.remove.get(group.name, ()))
        return tuple(i for i in range(group.size) if i not in gone)


def removal_count(size: int, ratio: float) -> int:
    """Channels a group of ``size`` loses at channel fraction ``ratio`` (rounded, at least one kept)."""
    return min(size - 1, max(0, int(math.floor(ratio * size + 0.5))))


# Scores are ranked after rounding to this precision, relative to the largest finite |score| ranked
# together. Why: the same criterion on the same weights and data computes its scores with other
# roundings on another CPU (other vector widths sum in other orders; float32 reductions then differ
# in about the 6th-7th significant digit). Channels whose scores are equal in exact arithmetic --
# dead channels, duplicated filters, symmetric units -- would then be ordered by noise and the plan
# would flip between machines. Rounded, they tie, and a tie goes to the lower position on every
# machine. A genuine near-tie that straddles a rounding step can still flip; the portability
# benchmark (benchmarks/portability.py) measures whether any plan does.
RANK_PRECISION = 1e-6


def rank_keys(scores: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """``scores`` rounded to :data:`RANK_PRECISION` of ``scale`` (default: their largest finite
    magnitude), as float64 integers; ±inf (already removed channels) stay as they are."""
    s = scores.detach().double().cpu()
    finite = torch.isfinite(s)
    if scale is None:
        scale = float(s[finite].abs().max()) if bool(finite.any()) else 0.0
    if scale <= 0.0 or not math.isfinite(scale):
        return torch.where(finite, torch.zeros_like(s), s)
    return torch.where(finite, torch.round(s / (scale * RANK_PRECISION)), s)


def lowest(scores: torch.Tensor, count: int) -> tuple[int, ...]:
    """Positions of the ``count`` lowest scores (after :func:`rank_keys`); ties go to the lower
    position, so the choice is the same on every machine."""
    if count <= 0:
        return ()
    order = torch.argsort(rank_keys(scores), stable=True)
    return tuple(sorted(int(i) for i in order[:count]))


def plan_layerwise(
    groups: Sequence[ChannelGroup], scores: Mapping[str, torch.Tensor], ratio: float
) -> PrunePlan:
    check_ratio(ratio)
    return PrunePlan(
        {g.name: lowest(scores[g.name], removal_count(g.size, ratio)) for g in groups}
    )


def plan_global(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    ratio: float,
    floor: float = GLOBAL_FLOOR,
) -> PrunePlan:
    """One ranking over every channel of every group; ``ratio`` of all channels go."""
    check_ratio(ratio)
    total = sum(g.size for g in groups)
    budget = int(math.floor(ratio * total + 0.5))
    # One scale for every group: the ranking is global, so is its rounding (see rank_keys).
    finite = [v for g in groups for v in scores[g.name].detach().double().cpu().tolist() if math.isfinite(v)]
    scale = max((abs(v) for v in finite), default=0.0)
    entries = []  # (rounded score, group index, position): sorting is deterministic on ties
    for gi, g in enumerate(groups):
        for pos, s in enumerate(rank_keys(scores[g.name], scale).tolist()):
            entries.append((s, gi, pos))
    entries.sort()
    removable = {g.name: g.size - max(1, math.ceil(floor * g.size)) for g in groups}
    remove: dict[str, list[int]] = {g.name: [] for g in groups}
    for _, gi, pos in entries:
        if budget == 0:
            break
        name = groups[gi].name
        if len(remove[name]) < removable[name]:
            remove[name].append(pos)
            budget -= 1
    return PrunePlan({k: tuple(sorted(v)) for k, v in remove.items()})


def plan_from_scores(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    ratio: float,
    allocation: Allocation = "layerwise",
) -> PrunePlan:
    missing = [g.name for g in groups if g.name not in scores]
    if missing:
        raise ValueError(f"criterion returned no scores for groups {missing[:5]}")
    for g in groups:
        if scores[g.name].numel() != g.size:
            raise ValueError(
                f"criterion returned {scores[g.name].numel()} scores for group {g.name} "
                f"of {g.size} channels"
            )
    if allocation == "layerwise":
        return plan_layerwise(groups, scores, ratio)
    if allocation == "global":
        return plan_global(groups, scores, ratio)
    raise SpecError(f"unknown allocation {allocation!r}: use one of {', '.join(ALLOCATIONS)}")


def rounded_kept(size: int, kept: int, multiple: int) -> int:
    """``kept`` channels of a group of ``size`` rounded to the nearest multiple of ``multiple``
    (``--prune-round-to``): vector units process channels in blocks, so an odd width costs the time
    of the next block. Halves round up (keep more), never below ``multiple``, never to zero: a count
    that rounds to the whole group, or a group of at most ``multiple`` channels, keeps every channel."""
    if multiple <= 1 or kept >= size:
        return kept
    return min(kept_options(size, multiple), key=lambda k: (abs(k - kept), -k))


def round_plan(
    plan: PrunePlan, groups: Sequence[ChannelGroup], scores: Mapping[str, torch.Tensor], multiple: int
) -> PrunePlan:
    """``plan`` with every group's kept count rounded by :func:`rounded_kept`. A group that now
    removes fewer channels keeps back its removed ones of the highest scores; one that removes more
    also loses its kept ones of the lowest scores (ties to the lower position, as in :func:`lowest`),
    so a one-shot layerwise plan rounded is that plan at the rounded count."""
    if multiple <= 1:
        return plan
    remove: dict[str, tuple[int, ...]] = {}
    for g in groups:
        gone = tuple(plan.remove.get(g.name, ()))
        count = g.size - rounded_kept(g.size, g.size - len(gone), multiple)
        if count == len(gone):
            remove[g.name] = gone
            continue
        remove[g.name] = resized_removal(g, gone, count, scores[g.name])
    return PrunePlan(remove)


def resized_removal(group: ChannelGroup, gone: Sequence[int], count: int, scores: torch.Tensor) -> tuple[int, ...]:
    """``count`` positions of ``group`` to remove, changing ``gone`` as little as possible: fewer
    keep back the removed ones of the highest scores; more also take the kept ones of the lowest
    (ties to the lower position, as in :func:`lowest`)."""
    keys = rank_keys(scores).tolist()
    by_score = lambda positions: sorted(positions, key=lambda p: (keys[p], p))  # noqa: E731
    gone = tuple(gone)
    if count <= len(gone):
        return tuple(sorted(by_score(gone)[:count]))
    kept = [p for p in range(group.size) if p not in set(gone)]
    return tuple(sorted(gone + tuple(by_score(kept)[: count - len(gone)])))


def kept_options(size: int, multiple: int) -> list[int]:
    """The kept counts :func:`rounded_kept` can give a group of ``size``: the multiples of
    ``multiple`` up to it, and the whole group."""
    return sorted({*range(multiple, size + 1, multiple), size})
