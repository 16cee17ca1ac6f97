"""Channel groups from the dependency graph.

Torch-Pruning's ``get_all_groups`` assumes that all output channels of a root layer share one
coupling. The option-A shortcut breaks that: the stage-2 transition conv's channels 8..23 are tied
(through the shortcut) to the stage-1 stream, its channels 0..7 and 24..31 (zero-padded in the
shortcut) to nothing upstream. So we enumerate groups ourselves: walk root layers (convs and
linears, in module order), ask for the group of their still-uncovered output channels, and split
those channels by the set of slices each one reaches, so that every group has uniform membership.

A grouped convolution (``groups=G``, not depthwise) reads each input channel in one of its G
groups only, and its weight holds the group's inputs at within-group positions: removing input
channel 3 of group 0 but nothing of group 1 leaves the groups of unequal width, which no
convolution computes. So one *position* of a group removes the channels at the same within-group
offset in every group at once (``bundles``): the producers lose G filters, the grouped conv one
weight column; its outputs are bundled the same way. ResNeXt and RegNet prune this way.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch_pruning as tp
from torch import nn

from ..errors import TraceError
from ..groups import ChannelGroup, GroupMember, is_conv_or_linear
from .graph import TracedModel, trace_model
from .walk_guard import WalkDiverged, bounded_walk
from .slices import (
    RootChannelReach,
    grouped_partners,
    member_slices,
    slices_by_root_channel,
    unsupported_reason,
)

Bundle = tuple[int, ...]  # the root channels one group position removes together


def _bundles(traced: TracedModel, reach: dict[int, RootChannelReach]) -> tuple[list[Bundle], str | None]:
    """Root channels joined into the bundles that grouped convolutions and equal splits tie, or
    that meet in one position further on (the features an unflatten makes one channel); one
    channel alone where nothing ties it; lowest channel first. And why some channels must be
    kept, if so.

    A grouped conv can tie a channel to one outside this group (its input reads a concatenation
    of another layer's channels, or the model input): removing the bundle would need two groups
    cut as one, so its channels are kept, like channels of the model input.
    """
    parent = {c: c for c in reach}

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    owners: dict = {}  # (node, role) → position along it → root channel
    for channel, r in reach.items():
        for key, idxs in r.slices.items():
            owner = owners.setdefault(key, {})
            for i in idxs:
                if i in owner:  # two root channels meet in one (an unflatten: features → channel)
                    parent[find(owner[i])] = find(channel)
                owner[i] = channel
    outside: dict[int, str] = {}
    for (node, role), owner in owners.items():
        for i, channel in owner.items():
            for partner in grouped_partners(node, role, i):
                if partner in owner:
                    parent[find(owner[partner])] = find(channel)
                else:
                    what = "" if node.type == tp.ops.OPTYPE.SPLIT else "grouped convolution "
                    outside.setdefault(channel, f"{what}{traced.describe(node)} ties them to channels "
                                                "of another layer or of the model input")
    joined: dict[int, list[int]] = {}
    for channel in sorted(reach):
        joined.setdefault(find(channel), []).append(channel)
    kept = {find(c) for c in outside}
    bundles = sorted((tuple(b) for root, b in joined.items() if root not in kept), key=lambda b: b[0])
    return bundles, next(iter(outside.values()), None)


def _bundle_reach(reach: dict[int, RootChannelReach], bundle: Bundle) -> RootChannelReach:
    """What removing every channel of ``bundle`` touches."""
    slices: dict = {}
    for channel in bundle:
        for key, idxs in reach[channel].slices.items():
            slices.setdefault(key, []).extend(idxs)
    boundary = next((reach[c].boundary for c in bundle if reach[c].boundary), None)
    return RootChannelReach(slices, boundary)


def _partition(reach: dict[Bundle, RootChannelReach]) -> list[list[Bundle]]:
    """Bundles grouped by the exact set of slices they reach, lowest channel first."""
    parts: dict[frozenset, list[Bundle]] = {}
    for bundle in sorted(reach):
        parts.setdefault(frozenset(reach[bundle].slices), []).append(bundle)
    return list(parts.values())


def _members(
    traced: TracedModel,
    root: str,
    channels: list[Bundle],
    reach: dict[Bundle, RootChannelReach],
    order: dict[str, int],
) -> tuple[GroupMember, ...]:
    per_channel = [member_slices(traced, reach[c]) for c in channels]
    members = [
        GroupMember(name, role, tuple(tuple(slices[(name, role)]) for slices in per_channel))
        for name, role in per_channel[0]
    ]
    members.sort(key=lambda m: (m.module != root, order[m.module], m.role != "producer"))
    return tuple(members)


def _mark_covered(traced: TracedModel, tp_group, covered: set[tuple[nn.Module, int]]) -> None:
    """Record the conv/linear output channels the group reaches: no later root asks for them."""
    for item in tp_group:
        module = item.dep.target.module
        if is_conv_or_linear(module) and traced.role(item.dep.handler) == "producer":
            covered.update((module, i) for i in item.idxs)


def _claim(group: ChannelGroup, claimed: dict[tuple[str, str, int], str]) -> None:
    """Every (module, role, position) may be in one returned group only.

    A layer Torch-Pruning misreads (a grouped conv it takes for a depthwise one) can tie unrelated
    channels together; the groups that reach it are dropped or refused, and this check makes sure
    nothing of that leaks into the groups we return.
    """
    for m in group.members:
        for idx in m.indices:
            for i in idx:
                other = claimed.setdefault((m.module, m.role, i), group.name)
                if other != group.name:
                    raise TraceError(
                        f"position {i} of {m.module!r} ({m.role}) is tied to both channel group "
                        f"{other!r} and {group.name!r}: the dependency graph couples channels "
                        f"pytest-prune cannot separate; pass ignore=[{group.root!r}] to leave "
                        "the second group's channels alone"
                    )


def _keep_or_explain(
    traced: TracedModel,
    name: str,
    root: str,
    channels: list[Bundle],
    reach: dict[Bundle, RootChannelReach],
    frozen: set[str],
    refused: list[tuple[str, str]],
) -> bool:
    """Whether the channels may be removed; those tied to a layer we cannot prune are appended to
    ``refused`` as (root, why), for one error that lists them all."""
    if any(reach[c].boundary for c in channels):
        return False
    slices = reach[channels[0]].slices
    producers = {traced.module_name(node) for node, role in slices if role == "producer"}
    if producers & frozen:
        return False
    for node, _ in slices:
        why = unsupported_reason(node, traced)
        if why:
            refused.append((root, f"channel group {name!r} is tied to {traced.describe(node)}, which "
                                  f"cannot be pruned exactly: {why}"))
            return False
    return True


def _diverged_reason(traced: TracedModel, root: str, diverged: WalkDiverged) -> str:
    return (
        f"the channels of {root!r} cannot be followed: Torch-Pruning's dependency walk from it keeps "
        f"returning to {traced.describe(diverged.node)} with new channel indices (channels followed "
        "through operations whose channel axis is not dim 1, such as attention over tokens)"
    )


def _refusal(refused: list[tuple[str, str]]) -> TraceError:
    """One error for every group that cannot be pruned, naming the layers that keep them all."""
    roots = sorted({root for root, _ in refused})
    shown = "; ".join(why for _, why in refused[:3]) + (f"; … {len(refused) - 3} more" if len(refused) > 3 else "")
    return TraceError(
        f"{len(refused)} channel group(s) cannot be pruned exactly: {shown}. To prune the rest and keep "
        f"these, pass --prune-ignore={','.join(roots)} (ignore={roots!r} in Python)"
    )


def find_channel_groups(
    model: nn.Module, example_input: torch.Tensor, *, ignore: Iterable[str] = (), notes: list[str] | None = None
) -> list[ChannelGroup]:
    """The model's prunable channel groups, covering every prunable output channel once.

    A group is named after its root layer (the first conv or linear, in module order, producing
    its channels), with ``#k`` appended when that layer's channels split into several groups.
    Channels tied to a model output (the classifier's logits), to the model input, or to a
    layer named in ``ignore`` as one of their producers are left out. The model's weights and
    train/eval modes are left as they were. Layers that run only in training mode (auxiliary
    heads) are left out on their own, with a line appended to ``notes`` saying so. Raises
    :class:`TraceError` for models that cannot be traced and for channels tied to layers that
    cannot be pruned exactly.
    """
    ignore = set(ignore)
    known = [name for name, _ in model.named_modules()]
    unknown = sorted(ignore - set(known))
    if unknown:
        raise TraceError(
            f"ignore names {unknown[:5]}, not modules of {type(model).__name__}; use names "
            "from model.named_modules(), e.g. 'fc' or 'layer1.0.conv1'"
        )
    traced = trace_model(model, example_input, ignore)
    if notes is not None:
        notes.extend(traced.notes)
    graph = traced.graph
    order = {name: i for i, name in enumerate(known)}
    covered: set[tuple[nn.Module, int]] = set()
    claimed: dict[tuple[str, str, int], str] = {}
    groups: list[ChannelGroup] = []
    refused: list[tuple[str, str]] = []
    kept: list[tuple[str, str]] = []  # (root, why) of channels a bundle ties to another group
    for root_name, root in model.named_modules():
        if not is_conv_or_linear(root) or root not in graph.module2node:
            continue
        pruner = traced.pruner(root)
        uncovered = [c for c in range(pruner.get_out_channels(root)) if (root, c) not in covered]
        if not uncovered or root_name in ignore:
            # an ignored layer's channels are kept whatever its group holds; a group another root
            # shares with it is found from that root, and kept because it has an ignored producer
            continue
        try:
            with bounded_walk(graph):
                tp_group = graph.get_pruning_group(root, pruner.prune_out_channels, uncovered)
        except WalkDiverged as diverged:
            refused.append((root_name, _diverged_reason(traced, root_name, diverged)))
            continue
        _mark_covered(traced, tp_group, covered)
        by_channel = slices_by_root_channel(traced, tp_group)
        bundles, why = _bundles(traced, by_channel)
        if why:
            kept.append((root_name, why))
        reach = {b: _bundle_reach(by_channel, b) for b in bundles}
        parts = _partition(reach)
        for k, channels in enumerate(parts):
            name = root_name if len(parts) == 1 else f"{root_name}#{k}"
            if _keep_or_explain(traced, name, root_name, channels, reach, ignore, refused):
                members = _members(traced, root_name, channels, reach, order)
                group = ChannelGroup(name, root_name, tuple(b[0] for b in channels), members)
                _claim(group, claimed)
                groups.append(group)
    if refused:
        raise _refusal(refused)
    if kept and notes is not None:
        roots = ", ".join(repr(root) for root, _ in kept[:3]) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
        notes.append(f"some channels of {roots} are kept: {kept[0][1]}")
    return groups
