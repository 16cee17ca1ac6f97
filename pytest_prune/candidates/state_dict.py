"""State-dict candidates: infer the kept widths from tensor shapes, shrink the dense architecture to
them with our surgery, and load the weights strictly.

A state dict names every layer but stores no architecture. The dense model supplies the
architecture and its channel groups supply the rule for shrinking it: every weight dimension a
group touches (a layer's output for producers, its input for consumers) loses, for each removed
channel of the group, the positions the group lists for that channel. A dimension touched by
several groups (the stage-2 transition conv of a CIFAR ResNet carries the stage-1 stream and the
channels the option-A shortcut pads) loses the sum. So each dimension gives one equation

    dense width − candidate width = Σ over its groups of (positions removed from the group),

and the removal count of every group is solved for, groups shared with solved ones last. Members of
one group must agree (a residual stream keeps the same channels in every block); the count most
members agree on is taken and every dissenting layer is named in the error.

Which channels a group loses does not change any weight shape, but it does change what a
parameter-free layer does: the option-A shortcut
(:class:`~pytest_prune.models.cifar_resnet.PadShortcut`) adds its input channels at ``positions``
that depend on which channels of the padded groups survived, and a state dict does not record
them. See :func:`shrink_to_candidate` for how they are recovered.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence, Union

import torch
from torch import nn

from ..errors import WeightsError
from ..groups import ChannelGroup, GroupMember, Role
from ..models.cifar_resnet import PadShortcut
from ..plan import PrunePlan
from ..surgery import prune_model
from .matching import FilterMatch, match_filters

Placement = Union[Literal["auto", "match", "last"], PrunePlan]
PLACEMENT_MIN_COSINE = 0.5  # a group matched worse than this cannot place the shortcut's channels
_SHOWN = 5  # names listed in an error message


@dataclass
class _Dimension:
    """One weight dimension that channel groups shrink, and the width the candidate gives it."""

    layer: str
    role: Role
    key: str  # the state-dict tensor whose shape is read
    dense: int
    found: int
    members: dict[str, GroupMember] = field(default_factory=dict)  # group name → its member here
    _tails: dict[str, list[int]] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.layer!r} ({'output' if self.role == 'producer' else 'input'})"

    def _tail(self, group: str) -> list[int]:
        """``[k]``: positions of this dimension held by the last ``k`` channels of ``group``."""
        if group not in self._tails:
            tails = [0]
            for idx in reversed(self.members[group].indices):
                tails.append(tails[-1] + len(idx))
            self._tails[group] = tails
        return self._tails[group]

    def removed_by(self, group: str, count: int) -> int:
        """Positions of this dimension gone when ``group`` loses its last ``count`` channels."""
        return self._tail(group)[count]

    def count_removing(self, group: str, positions: int) -> int | None:
        """How many channels ``group`` must lose for this dimension to lose ``positions``; None
        when no count does (one channel is always kept)."""
        tails = self._tail(group)
        count = bisect.bisect_left(tails, positions)
        return count if count < len(tails) - 1 and tails[count] == positions else None

    def expected(self, counts: Mapping[str, int]) -> int:
        return self.dense - sum(self.removed_by(g, counts[g]) for g in self.members)


@dataclass
class ShrunkModel:
    """The dense architecture shrunk to a candidate's widths, with the candidate's weights."""

    model: nn.Module
    plan: PrunePlan
    removed: dict[str, int]  # channels removed per group
    match: FilterMatch | None
    notes: list[str]


def _reference_key(layer: str, role: Role, state: Mapping[str, torch.Tensor]) -> str | None:
    """The tensor whose shape gives a layer's width: its weight (BatchNorm without affine
    parameters: its running mean) along dim 0 for outputs, dim 1 for inputs."""
    prefix = f"{layer}." if layer else ""
    names = ("weight",) if role == "consumer" else ("weight", "running_mean")
    return next((prefix + n for n in names if prefix + n in state), None)


def _dimensions(
    dense: Mapping[str, torch.Tensor],
    candidate: Mapping[str, torch.Tensor],
    groups: Sequence[ChannelGroup],
) -> dict[tuple[str, Role], _Dimension]:
    dims: dict[tuple[str, Role], _Dimension] = {}
    for g in groups:
        for m in g.members:
            dim = dims.get((m.module, m.role))
            if dim is None:
                key = _reference_key(m.module, m.role, dense)
                if key is None:
                    raise WeightsError(
                        f"channel group {g.name!r} lists layer {m.module!r}, which has no weight "
                        "in the dense model's state dict; find the groups on this dense model"
                    )
                axis = m.weight_dim()
                dim = _Dimension(
                    m.module, m.role, key, dense[key].shape[axis], candidate[key].shape[axis]
                )
                dims[(m.module, m.role)] = dim
            dim.members[g.name] = m
    return dims


def _count_from(dim: _Dimension, group: ChannelGroup, counts: Mapping[str, int]) -> int | None:
    """The removal count of ``group`` that gives ``dim`` its candidate width (others solved)."""
    left = dim.dense - dim.found
    left -= sum(dim.removed_by(g, counts[g]) for g in dim.members if g != group.name)
    return dim.count_removing(group.name, left)


def _unreachable(dim: _Dimension, group: ChannelGroup, source: str) -> WeightsError:
    if dim.found > dim.dense:
        why = f"more than the dense model's {dim.dense}: is this the candidate's dense model?"
    else:
        why = (
            f"which no pruning of channel group {group.name!r} ({group.size} channels, dense "
            f"width {dim.dense}) reaches"
        )
    return WeightsError(f"{source}: layer {dim.describe()} has width {dim.found}, {why}")


def infer_removals(
    dense: Mapping[str, torch.Tensor],
    candidate: Mapping[str, torch.Tensor],
    groups: Sequence[ChannelGroup],
    source: str = "the candidate",
) -> dict[str, int]:
    """How many channels each group lost, from the candidate's tensor shapes.

    Raises :class:`WeightsError` naming the layer(s) when a width cannot be reached by removing
    whole channels of its groups, or when the members of a group disagree.
    """
    dims = _dimensions(dense, candidate, groups)
    counts: dict[str, int] = {}
    pending = list(groups)
    while pending:
        solved = []
        for g in pending:
            # Each dimension whose other groups are solved votes for g's count; the root comes
            # first among a group's members, so it wins a tie.
            voters = [
                dims[(m.module, m.role)]
                for m in g.members
                if all(o in counts for o in dims[(m.module, m.role)].members if o != g.name)
            ]
            if not voters:
                continue
            votes = [(_count_from(d, g, counts), d) for d in voters]
            valid = [count for count, _ in votes if count is not None]
            if not valid:
                raise _unreachable(votes[0][1], g, source)
            counts[g.name] = Counter(valid).most_common(1)[0][0]
            solved.append(g)
        if not solved:
            raise WeightsError(
                f"{source}: the widths of channel groups {[g.name for g in pending[:_SHOWN]]} "
                "cannot be told apart from the layer shapes (every layer they touch is shared)"
            )
        pending = [g for g in pending if g not in solved]
    _check_agreement(dims.values(), counts, groups, source)
    return counts


def _check_agreement(
    dims, counts: Mapping[str, int], groups: Sequence[ChannelGroup], source: str
) -> None:
    wrong = [d for d in dims if d.found != d.expected(counts)]
    if not wrong:
        return
    first = wrong[0]
    group = next(g for g in groups if g.name in first.members)
    agreeing = [d.describe() for d in dims if group.name in d.members and d not in wrong]
    listed = ", ".join(
        f"{d.describe()} has {d.found} (expected {d.expected(counts)}, dense {d.dense}"
        f"{', wider than dense' if d.found > d.dense else ''})"
        for d in wrong[:_SHOWN]
    )
    more = f" and {len(wrong) - _SHOWN} more" if len(wrong) > _SHOWN else ""
    raise WeightsError(
        f"{source}: inconsistent widths in channel group {group.name!r}, whose layers must all "
        f"keep the same channels (they are added together, e.g. by a residual connection): "
        f"{listed}{more}; {len(agreeing)} other layers of the group, e.g. "
        f"{', '.join(agreeing[:3])}, keep {group.size - counts[group.name]} of {group.size} "
        "channels. The candidate was not pruned consistently, or belongs to another dense model"
    )


def check_keys(
    dense: Mapping[str, torch.Tensor], candidate: Mapping[str, torch.Tensor], source: str
) -> None:
    missing = [k for k in dense if k not in candidate]
    unexpected = [k for k in candidate if k not in dense]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[:_SHOWN]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:_SHOWN]}")
        raise WeightsError(
            f"{source} does not fit the dense architecture: {'; '.join(parts)}. A candidate "
            "must keep the dense model's layer names: is it a candidate of this dense model?"
        )
    wrong = [k for k in dense if candidate[k].dim() != dense[k].dim()]
    if wrong:
        k = wrong[0]
        raise WeightsError(
            f"{source}: {k!r} has shape {tuple(candidate[k].shape)} where the dense model has "
            f"{tuple(dense[k].shape)}; pruning removes channels, it does not change a "
            "tensor's number of dimensions"
        )


def last_channels_plan(groups: Sequence[ChannelGroup], counts: Mapping[str, int]) -> PrunePlan:
    return PrunePlan({g.name: tuple(range(g.size - counts[g.name], g.size)) for g in groups})


def needs_placement(model: nn.Module) -> bool:
    """Whether which channels were removed (not only how many) changes the shrunk model."""
    return any(isinstance(m, PadShortcut) for m in model.modules())


def _matched_plan(
    dense_model: nn.Module,
    candidate: Mapping[str, torch.Tensor],
    groups: Sequence[ChannelGroup],
    counts: Mapping[str, int],
    source: str,
) -> tuple[PrunePlan, FilterMatch, str]:
    why = "which channels were kept decides where the option-A shortcut adds its input"
    try:
        match = match_filters(dense_model, candidate, groups)
    except WeightsError as exc:
        raise WeightsError(
            f"{source}: cannot recover the removed channels ({why}): {exc}"
        ) from None
    sizes = {g.name: g.size for g in groups}
    for name, m in match.groups.items():
        if len(m.removed) != counts[name] or m.mean_cosine < PLACEMENT_MIN_COSINE:
            raise WeightsError(
                f"{source}: cannot tell which channels of group {name!r} the candidate kept "
                f"({why}): its filters of {m.layer!r} match the dense model's with mean cosine "
                f"{m.mean_cosine:.2f}, keeping {len(m.kept)} where its shapes say "
                f"{sizes[name] - counts[name]}. Pass the dense model the candidate was pruned "
                "from, or placement=<the PrunePlan it was pruned with>"
            )
    note = (
        "removed channels recovered by matching filters to the dense model "
        f"({why}): cosine min {match.min_cosine:.4f}, mean {match.mean_cosine:.4f}"
    )
    if not all(m.in_order for m in match.groups.values()):
        note += "; some groups' survivors are not in dense order, so the placement is uncertain"
    return match.plan, match, note


def _given_plan(
    plan: PrunePlan, groups: Sequence[ChannelGroup], counts: Mapping[str, int], source: str
) -> PrunePlan:
    for g in groups:
        given = len(set(plan.remove.get(g.name, ())))
        if given != counts[g.name]:
            raise WeightsError(
                f"{source}: the plan given removes {given} channels of group {g.name!r}, but the "
                f"candidate's shapes say {counts[g.name]}"
            )
    return plan


def _placed_plan(
    placement: Placement,
    dense_model: nn.Module,
    candidate: Mapping[str, torch.Tensor],
    groups: Sequence[ChannelGroup],
    counts: Mapping[str, int],
    source: str,
) -> tuple[PrunePlan, FilterMatch | None, str | None]:
    """The plan to shrink with, the match it came from (if any), and a note on the choice."""
    if isinstance(placement, PrunePlan):
        return _given_plan(placement, groups, counts, source), None, "placement: the plan given"
    if placement not in ("auto", "match", "last"):
        raise ValueError(f"placement must be 'auto', 'match', 'last' or a PrunePlan: {placement!r}")
    shortcut = needs_placement(dense_model)
    if placement == "match" or (placement == "auto" and shortcut):
        return _matched_plan(dense_model, candidate, groups, counts, source)
    guess = (
        "assumed the last channels of every group were removed: the option-A shortcut's "
        "placement is a guess"
    )
    return last_channels_plan(groups, counts), None, guess if shortcut else None


def _check_shapes(model: nn.Module, candidate: Mapping[str, torch.Tensor], source: str) -> None:
    for key, tensor in model.state_dict().items():
        found = candidate[key]
        if found.shape != tensor.shape:
            layer = key.rpartition(".")[0]
            raise WeightsError(
                f"{source}: {key!r} has shape {tuple(found.shape)}, but layer {layer!r} of the "
                f"dense architecture can only be shrunk to {tuple(tensor.shape)}: some of its "
                "channels are in no channel group our surgery may remove (they are tied to the "
                "model's input or output, or ignored)"
            )


def shrink_to_candidate(
    dense_model: nn.Module,
    candidate: Mapping[str, torch.Tensor],
    groups: Sequence[ChannelGroup],
    example_input: torch.Tensor,
    *,
    placement: Placement = "auto",
    source: str = "the candidate",
) -> ShrunkModel:
    """A copy of ``dense_model`` shrunk to the candidate's widths, loaded with its weights.

    ``placement`` chooses which channels of each group count as removed (the shapes fix only how
    many):

    * ``"last"`` — the last ones. Exact for every architecture whose parameter-free layers do not
      depend on the choice, i.e. all but the option-A shortcut.
    * ``"match"`` — the ones :func:`match_filters` finds missing, comparing the candidate's
      filters with ``dense_model``'s. Exact for a candidate cut from this dense model (cosine 1);
      for a fine-tuned candidate it is as good as the reported cosines.
    * ``"auto"`` (default) — ``"match"`` when the dense model has an option-A shortcut, ``"last"``
      otherwise.
    * a :class:`PrunePlan` — the plan the candidate was made with, when it is known.

    The copy keeps ``dense_model``'s train/eval modes.
    """
    dense = dense_model.state_dict()
    check_keys(dense, candidate, source)
    counts = infer_removals(dense, candidate, groups, source)
    plan, match, placed = _placed_plan(placement, dense_model, candidate, groups, counts, source)
    notes = [
        f"widths inferred from tensor shapes: {sum(1 for c in counts.values() if c)} of "
        f"{len(groups)} channel groups shrunk, {sum(counts.values())} channels removed"
    ]
    notes += [placed] if placed else []
    model = prune_model(dense_model, groups, plan, example_input)
    _check_shapes(model, candidate, source)
    try:
        model.load_state_dict(candidate, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{source} does not load: {str(exc).splitlines()[0]}") from None
    return ShrunkModel(model, plan, dict(counts), match, notes)
