"""Test cases for the surgery tests: calibrated zoo models and seeded random plans."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from pytest_prune.groups import ChannelGroup, is_batchnorm
from pytest_prune.models import build_model
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups

TOLERANCE = 1e-5  # float32 round-off between the pruned and the masked dense model


def give_batchnorm_statistics(model: nn.Module, input_shape: Sequence[int], seed: int = 0) -> None:
    """Random affine parameters and running statistics from a train-mode batch.

    Fresh BatchNorms (scale 1, shift 0, mean 0, variance 1) would hide a leaked shift in a removed
    channel; statistics estimated from data also keep deep random networks' outputs O(1), so that
    an absolute float32 tolerance means something.
    """
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if is_batchnorm(m)]
    momenta = [bn.momentum for bn in norms]
    with torch.no_grad():
        for bn in norms:
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.uniform_(-0.5, 0.5, generator=g)
            bn.reset_running_stats()
            bn.momentum = None  # take the batch statistics as they are
        model.train()
        model(torch.randn((4, *input_shape), generator=g))
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()


@dataclass
class ZooCase:
    """A zoo model with non-trivial BatchNorms, its example input and its channel groups."""

    spec: str
    model: nn.Module
    example: torch.Tensor
    groups: list[ChannelGroup]


def make_case(spec: str, size: int | None = None) -> ZooCase:
    info = build_model(spec)
    channels, height, width = info.input_shape
    shape = (channels, size or height, size or width)
    give_batchnorm_statistics(info.model, shape)
    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(1))
    return ZooCase(spec, info.model, example, find_channel_groups(info.model, example))


def random_plan(groups: Sequence[ChannelGroup], fraction: float, seed: int) -> PrunePlan:
    """Remove ``fraction`` of every group (at least one channel, never all) at random positions."""
    rng = random.Random(seed)
    remove = {}
    for g in groups:
        count = min(g.size - 1, max(1, round(fraction * g.size)))
        remove[g.name] = tuple(sorted(rng.sample(range(g.size), count)))
    return PrunePlan(remove)


def keep_one_plan(groups: Sequence[ChannelGroup], seed: int) -> PrunePlan:
    """The extreme plan: every group keeps one channel, chosen at random."""
    rng = random.Random(seed)
    plan = {}
    for g in groups:
        survivor = rng.randrange(g.size)
        plan[g.name] = tuple(i for i in range(g.size) if i != survivor)
    return PrunePlan(plan)
