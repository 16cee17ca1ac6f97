"""Channel groups: the units that pruning removes.

A *channel group* is a set of channels that can only be removed together: the output channel of a
conv, the matching BatchNorm entries, the input slices of every layer that consumes it, and, through
residual additions or shape-preserving shortcuts, every other producer of the same channel. The
surgery module finds them (with Torch-Pruning's dependency graph); everything else in the pipeline
(criteria, plans, masks, reports) works on this plain description, which names modules by their
qualified names so that it stays valid for deep copies of the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Role = Literal["producer", "consumer"]


@dataclass(frozen=True)
class GroupMember:
    """One module's part in a channel group.

    ``role`` is ``"producer"`` when the module's *output* dimension holds the channel (conv and
    linear output channels, BatchNorm entries, depthwise convs) and ``"consumer"`` when its *input*
    dimension reads it (the next conv's input slice, a linear layer after a flatten).
    ``indices[c]`` lists the positions, along that dimension of the module's weight, that belong to
    channel ``c`` of the group: usually one position, several for a linear layer that reads a
    flattened feature map (one per spatial location) and for the layers around a grouped conv,
    which ties the same within-group offset of each of its groups into one channel of the group.
    A grouped conv's consumer positions count its input channels (0..in_channels-1), not the
    columns of its weight, which holds one group's inputs.
    """

    module: str
    role: Role
    indices: tuple[tuple[int, ...], ...]

    def weight_dim(self) -> int:
        """The weight dimension that holds the channel: 0 for producers, 1 for consumers (swapped
        for transposed convs: see :func:`weight_axis`, which knows the module)."""
        return 0 if self.role == "producer" else 1


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are pruned together; ``size`` channels, each listed in every member."""

    name: str
    root: str
    # the root layer's first output channel of each position; the root member's indices list
    # them all (several where a grouped conv bundles one per group)
    root_indices: tuple[int, ...]
    members: tuple[GroupMember, ...]

    @property
    def size(self) -> int:
        return len(self.root_indices)

    def producers(self) -> tuple[GroupMember, ...]:
        return tuple(m for m in self.members if m.role == "producer")

    def consumers(self) -> tuple[GroupMember, ...]:
        return tuple(m for m in self.members if m.role == "consumer")


def member_weight_slices(
    model: nn.Module, member: GroupMember
) -> list[tuple[torch.Tensor, ...]]:
    """For each channel of the group, the weight tensors of ``member`` that belong to it.

    Producers give their output slice of the weight and, where present, of the bias; consumers give
    their input slice of the weight. Used by weight-based criteria (L1, CPMC, statistics).
    """
    module = model.get_submodule(member.module)
    weight = getattr(module, "weight", None)
    if weight is None:
        return [() for _ in member.indices]
    out = []
    for idx in member.indices:
        index = torch.as_tensor(idx, dtype=torch.long, device=weight.device)
        if member.role == "consumer" and getattr(module, "groups", 1) > 1:
            out.append((_grouped_input_slice(module, weight.detach(), idx),))
            continue
        parts = [weight.detach().index_select(weight_axis(module, member.role), index)]
        bias = getattr(module, "bias", None)
        if member.role == "producer" and bias is not None:
            parts.append(bias.detach().index_select(0, index))
        out.append(tuple(parts))
    return out


def _grouped_input_slice(conv: nn.Module, weight: torch.Tensor, inputs: tuple[int, ...]) -> torch.Tensor:
    """The weights that read ``inputs`` of a grouped conv, as one (outputs, k, ...) tensor: input c
    is column c mod (in/G) of the filters of group c div (in/G) only."""
    per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    parts = [weight[(c // per_in) * per_out:(c // per_in + 1) * per_out, c % per_in] for c in inputs]
    return torch.cat(parts).unsqueeze(1)


def weight_axis(module: nn.Module, role: Role) -> int:
    """The dimension of ``module.weight`` that holds a channel in ``role``: 0 for producers and 1
    for consumers, swapped for a transposed conv, whose weight is (in, out / groups, k, k)."""
    axis = 0 if role == "producer" else 1
    return 1 - axis if getattr(module, "transposed", False) else axis


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def batchnorm_scale(bn: nn.Module) -> torch.Tensor:
    """γ/σ per channel of an eval-mode BatchNorm (1/σ without affine weights), in float64: the
    factor by which it multiplies what it reads."""
    scale = 1.0 / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    return scale * bn.weight.detach().double() if bn.affine else scale


def is_conv_or_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))
