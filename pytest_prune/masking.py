"""The masked dense model: the reference a pruned model must equal.

Masking zeroes every *producer* slice of the removed channels (conv and linear output channels with
their bias, BatchNorm scale and shift, depthwise convs). A removed channel is then exactly zero
wherever it flows (ReLU, pooling, additions, concatenation and the option-A shortcut all map zero
to zero), so every consumer sees zero in its place. Zeroing the conv alone is not enough: the
BatchNorm shift that follows would leak a constant into the channel.

Consumers are deliberately left alone: if the surgery maps a consumer's input slice to the wrong
position, the pruned model differs from this reference, and the property tests see it.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from .groups import ChannelGroup, weight_axis
from .plan import PrunePlan


def _producer_slices(
    model: nn.Module, groups: Sequence[ChannelGroup], plan: PrunePlan
) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    """(parameter, dimension, output indices) to zero for ``plan``."""
    by_name = {g.name: g for g in groups}
    out = []
    for name, positions in plan.remove.items():
        if not positions:
            continue
        group = by_name[name]
        for member in group.producers():
            module = model.get_submodule(member.module)
            idx = sorted({i for p in positions for i in member.indices[p]})
            index = torch.as_tensor(idx, dtype=torch.long)
            for pname in ("weight", "bias"):
                param = getattr(module, pname, None)
                if isinstance(param, torch.Tensor):
                    dim = weight_axis(module, "producer") if pname == "weight" else 0
                    out.append((param, dim, index.to(param.device)))
    return out


def mask_channels(
    model: nn.Module, groups: Sequence[ChannelGroup], plan: PrunePlan
) -> nn.Module:
    """A deep copy of ``model`` with the channels of ``plan`` zeroed where they are produced."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for param, dim, index in _producer_slices(masked, groups, plan):
            param.index_fill_(dim, index, 0.0)
    return masked


@contextmanager
def channels_masked(
    model: nn.Module, groups: Sequence[ChannelGroup], plan: PrunePlan
) -> Iterator[nn.Module]:
    """Mask ``plan`` in place for the duration of the block, then restore the exact weights.

    Cheaper than :func:`mask_channels` for criteria that try many removals (CAR, Taylor).
    """
    slices = _producer_slices(model, groups, plan)
    saved = [param.detach().index_select(dim, index).clone() for param, dim, index in slices]
    try:
        with torch.no_grad():
            for param, dim, index in slices:
                param.index_fill_(dim, index, 0.0)
        yield model
    finally:
        with torch.no_grad():
            for (param, dim, index), old in zip(slices, saved):
                param.index_copy_(dim, index, old)
