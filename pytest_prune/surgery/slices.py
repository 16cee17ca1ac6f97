"""What a Torch-Pruning group touches, per root channel, in the project's terms.

A Torch-Pruning ``Group`` is a list of (dependency, indices) items; each index carries the root
channel it came from. :func:`slices_by_root_channel` regroups that by root channel: which
(module, role) slices each root channel reaches and at which positions. Both group discovery and
surgery read groups this way, so that they agree on what a channel is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import Group, Node

from ..groups import is_batchnorm
from ..models.cifar_resnet import PadShortcut
from .channel_cuts import split_partners
from .graph import Role, TracedModel

SliceKey = tuple[Node, Role]


@dataclass
class RootChannelReach:
    """Everything one root channel is tied to."""

    slices: dict[SliceKey, list[int]]  # (node, role) → positions along that dimension
    boundary: str | None  # why the channel may not be removed (model input/output), if so


def slices_by_root_channel(traced: TracedModel, group: Group) -> dict[int, RootChannelReach]:
    reach: dict[int, RootChannelReach] = {}
    for item in group:
        node, handler = item.dep.target, item.dep.handler
        key = (node, traced.role(handler))
        boundary = traced.boundary(node, handler)
        for idx, root in zip(item.idxs, item.root_idxs):
            channel = reach.get(root)
            if channel is None:
                channel = reach[root] = RootChannelReach({}, None)
            channel.slices.setdefault(key, []).append(idx)
            if boundary:
                channel.boundary = channel.boundary or boundary
    return reach


def member_slices(traced: TracedModel, channel: RootChannelReach) -> dict[tuple[str, Role], list[int]]:
    """The slices of ``channel`` in layers with weights, by (module name, role)."""
    names = traced.layer_names
    return {
        (names[node], role): sorted(set(idxs))
        for (node, role), idxs in channel.slices.items()
        if node in names
    }


def _grouped(module: object) -> bool:
    """A grouped convolution that is not depthwise: Torch-Pruning's depthwise pruner (which
    removes an input with its output) takes over when ``groups == out_channels``."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and not module.transposed
        and module.groups > 1
        and module.groups != module.out_channels
    )


def grouped_partners(node: Node, role: Role, index: int) -> list[int]:
    """The channels a grouped convolution ties to its channel ``index``: the same within-group
    offset in every other group (its inputs as a consumer, its outputs as a producer); likewise
    the same offset in every part of a split into equal parts."""
    module = node.module
    if node.type == tp.ops.OPTYPE.SPLIT:
        return split_partners(node, index)
    if not _grouped(module):
        return []
    width = module.in_channels if role == "consumer" else module.out_channels
    per_group = width // module.groups
    offset = index % per_group
    return [g * per_group + offset for g in range(module.groups) if g * per_group + offset != index]


def unsupported_reason(node: Node, traced: TracedModel) -> str | None:
    """Why removing channels of ``node`` would not match the masked reference, if it would not.

    The masked reference zeroes conv/linear/BatchNorm output slices and relies on every operation
    between them mapping zero to zero channel by channel; anything else cannot be pruned exactly.
    """
    module = node.module
    if node in traced.opaque_nodes:
        return traced.opaque_nodes[node]
    if isinstance(module, nn.Parameter):
        return "a bare nn.Parameter used in forward has no known channel axis"
    if not isinstance(module, nn.Module):
        return None
    if module not in traced.names:  # Torch-Pruning's stand-ins for functions (add, cat, view, ...)
        if isinstance(node.grad_fn, torch.autograd.function.BackwardCFunction):
            return "a custom autograd Function maps channels in a way the tracer cannot see"
        return None
    if isinstance(module, PadShortcut):
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed and module.groups > 1:
            return (f"a grouped transposed convolution (groups={module.groups}) is cut by "
                    "Torch-Pruning as if its weight were not transposed")
        return None
    if isinstance(module, nn.Linear):
        return None
    if is_batchnorm(module):
        if not module.affine:
            return "a BatchNorm without affine parameters shifts a removed channel off zero"
        return None
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "layernorm" in type(module).__name__.lower():
        # Decided, not missing: a masked model is no reference here, since a zeroed channel still
        # counts in the mean and variance the other channels are normalised by.
        return (f"{type(module).__name__} normalises over channels, so removing one changes every other "
                "channel's output and no masked model computes the pruned function")
    return f"{type(module).__name__} layers are not supported"
