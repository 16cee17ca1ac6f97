"""Surgery: a pruned deep copy of a model, from channel groups and a plan.

Groups name channels by their *original* positions, but several groups share modules (the stage-2
transition conv of a CIFAR ResNet belongs to the stage-1 stream group and roots the padded group),
so positions shift as groups are removed one after another. :class:`SurvivingChannels` keeps, per
(module, role), the original positions still present and translates each group's positions to the
current ones before Torch-Pruning is called. Each Torch-Pruning group is checked against our group
before anything is cut, so a mismatch is an error, never a silently different network.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch_pruning.dependency import Group

from ..errors import PruneError, TraceError
from ..groups import ChannelGroup, Role
from ..plan import PrunePlan
from .graph import TracedModel, trace_model
from .slices import member_slices, slices_by_root_channel

SliceName = tuple[str, Role]  # (module name, role): one weight dimension of one layer


class SurvivingChannels:
    """Per (module, role): the original positions still present, in their current order."""

    def __init__(self) -> None:
        self._kept: dict[SliceName, list[int]] = {}

    def track(self, key: SliceName, size: int) -> None:
        self._kept.setdefault(key, list(range(size)))

    def current(self, key: SliceName, originals: Sequence[int]) -> list[int]:
        now = {orig: i for i, orig in enumerate(self._kept[key])}
        gone = [i for i in originals if i not in now]
        if gone:
            raise PruneError(
                f"channels {gone[:5]} of {key[0]!r} ({key[1]}) belong to two groups of the plan; "
                "groups must not overlap: find them with find_channel_groups"
            )
        return sorted(now[i] for i in originals)

    def remove(self, key: SliceName, originals: Sequence[int]) -> None:
        gone = set(originals)
        self._kept[key] = [i for i in self._kept[key] if i not in gone]


def _check_plan(groups: Sequence[ChannelGroup], plan: PrunePlan) -> dict[str, ChannelGroup]:
    by_name = {g.name: g for g in groups}
    for name, positions in plan.remove.items():
        if name not in by_name:
            raise PruneError(
                f"the plan removes channels of group {name!r}, which is not among the "
                f"{len(by_name)} groups given; build the plan from the same groups"
            )
        size = by_name[name].size
        bad = [p for p in positions if not 0 <= p < size]
        if bad:
            raise PruneError(
                f"the plan removes positions {bad[:5]} of group {name!r}, which has {size} "
                "channels (positions 0..size-1)"
            )
        if len(set(positions)) >= size:
            raise PruneError(
                f"the plan removes all {size} channels of group {name!r}; keep at least one"
            )
    return by_name


def _layer(traced: TracedModel, name: str, group: ChannelGroup) -> nn.Module:
    """The traced layer called ``name`` in the model being pruned."""
    try:
        module = traced.model.get_submodule(name)
    except AttributeError:
        module = None
    if module is None or module not in traced.graph.module2node:
        raise TraceError(
            f"group {group.name!r} names layer {name!r}, which {type(traced.model).__name__} "
            "does not have (or does not use); the groups were found on another model"
        )
    return module


def _slice_size(traced: TracedModel, name: str, role: Role, group: ChannelGroup) -> int:
    module = _layer(traced, name, group)
    pruner = traced.pruner(module)
    size = pruner.get_out_channels(module) if role == "producer" else pruner.get_in_channels(module)
    if size is None:
        raise TraceError(
            f"group {group.name!r} lists {name!r} ({type(module).__name__}), which has no "
            "channels to remove; the groups were found on another model"
        )
    return size


def _removed(group: ChannelGroup, positions: Sequence[int]) -> dict[SliceName, list[int]]:
    """Original positions, per slice, of the group's channels at ``positions``."""
    return {(m.module, m.role): [i for p in positions for i in m.indices[p]] for m in group.members}


def _what_torch_pruning_cuts(traced: TracedModel, tp_group: Group) -> dict[SliceName, list[int]]:
    cut: dict[SliceName, set[int]] = {}
    for channel in slices_by_root_channel(traced, tp_group).values():
        if channel.boundary:
            raise TraceError(
                f"these channels are tied to the model's interface ({channel.boundary}) and "
                "cannot be removed: find groups with find_channel_groups"
            )
        for key, idxs in member_slices(traced, channel).items():
            cut.setdefault(key, set()).update(idxs)
    return {key: sorted(idxs) for key, idxs in cut.items()}


def _cut_group(
    traced: TracedModel,
    group: ChannelGroup,
    positions: Sequence[int],
    kept: SurvivingChannels,
) -> None:
    removed = _removed(group, positions)
    root = _layer(traced, group.root, group)
    # every root channel of each position (several where a grouped conv bundles them)
    current = kept.current((group.root, "producer"), removed[(group.root, "producer")])
    prune_out = traced.pruner(root).prune_out_channels
    tp_group = traced.graph.get_pruning_group(root, prune_out, current)
    expected = {key: kept.current(key, originals) for key, originals in removed.items()}
    actual = _what_torch_pruning_cuts(traced, tp_group)
    if actual != expected:
        keys = expected.keys() | actual.keys()
        differ = sorted(k for k in keys if actual.get(k) != expected.get(k))
        raise TraceError(
            f"group {group.name!r} does not describe this model: the dependency graph ties its "
            f"channels to other positions of {differ[:3]}; find the groups again with "
            "find_channel_groups on this model"
        )
    for key, originals in removed.items():
        kept.remove(key, originals)
    tp_group.prune(record_history=False)


def prune_model(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    plan: PrunePlan,
    example_input: torch.Tensor,
) -> nn.Module:
    """A deep copy of ``model`` with the channels of ``plan`` removed; ``model`` is untouched.

    The copy keeps every module's train/eval mode and which parameters require grad. Raises
    :class:`PruneError` for a plan that does not fit ``groups`` and :class:`TraceError` when
    ``groups`` do not describe this model.
    """
    by_name = _check_plan(groups, plan)
    pruned = copy.deepcopy(model)
    todo = [(by_name[name], sorted(set(p))) for name, p in plan.remove.items() if p]
    if not todo:
        return pruned
    traced = trace_model(pruned, example_input, check_layers=False)
    # Torch-Pruning builds new nn.Parameters, which require grad: keep frozen layers frozen.
    frozen = {name for name, p in pruned.named_parameters() if not p.requires_grad}
    kept = SurvivingChannels()
    for group in groups:
        for m in group.members:
            kept.track((m.module, m.role), _slice_size(traced, m.module, m.role, group))
    for group, positions in todo:
        _cut_group(traced, group, positions, kept)
    for name, param in pruned.named_parameters():
        param.requires_grad_(name not in frozen)
    return pruned
