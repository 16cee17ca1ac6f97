"""``cpmc``: channel pruning via multi-criteria based on weight dependency.

Yan, Guo, Li, Yang, Xu, *Channel Pruning via Multi-Criteria based on Weight Dependency*,
arXiv:2011.03240, 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import ClassVar, Sequence

import torch
from torch import nn

from ..groups import ChannelGroup, is_conv_or_linear, member_weight_slices
from ..plan import Allocation, PrunePlan, plan_from_scores
from ._activations import example_of, one_pass
from .base import Criterion, ScoringContext, Scores, one_shot_scores
from .registry import register


@dataclass(frozen=True)
class ChannelTerms:
    """CPMC's three raw terms for every channel of one group (float64, one entry per channel)."""

    weight: torch.Tensor  # w: Σ|W_producer[k]| + Σ|W_consumer[:, k]|
    macs: torch.Tensor  # f: multiply-accumulates per sample removed with the channel
    params: torch.Tensor  # p: parameters removed with the channel


def output_positions(model: nn.Module, groups: Sequence[ChannelGroup], example: torch.Tensor) -> dict[str, int]:
    """Output positions per sample (H·W of a conv's output; 1 for a linear on flat input) of every
    conv/linear member, from one forward pass on ``example``."""
    wanted = {m.module for g in groups for m in g.members}
    seen: dict[str, int] = {}

    def make_hook(name: str):
        def hook(module, inputs, output):
            if name not in seen and isinstance(output, torch.Tensor):
                if isinstance(module, nn.modules.conv._ConvNd):
                    seen[name] = prod(output.shape[2:])
                else:  # Linear: every leading dimension but the batch is a position
                    seen[name] = prod(output.shape[1:-1])

        return hook

    modules = {name: model.get_submodule(name) for name in sorted(wanted)}
    one_pass(model, example, {m: make_hook(n) for n, m in modules.items() if is_conv_or_linear(m)})
    return seen


def channel_terms(model: nn.Module, group: ChannelGroup, positions: dict[str, int]) -> ChannelTerms:
    """w, f and p of every channel of ``group`` from its members' weights and output sizes.

    f counts like :mod:`pytest_prune.measure.macs`: conv/linear only, one MAC per weight entry per
    output position, biases and BatchNorm free. p counts every parameter entry removed (weights,
    biases, BatchNorm scale and shift).
    """
    w = torch.zeros(group.size, dtype=torch.float64)
    f = torch.zeros(group.size, dtype=torch.float64)
    p = torch.zeros(group.size, dtype=torch.float64)
    for member in group.members:
        module = model.get_submodule(member.module)
        weighted = is_conv_or_linear(module)
        for c, parts in enumerate(member_weight_slices(model, member)):
            if not parts:
                continue
            p[c] += sum(t.numel() for t in parts)
            if weighted:
                w[c] += float(parts[0].abs().sum())
                f[c] += parts[0].numel() * positions.get(member.module, 0)
    return ChannelTerms(w, f, p)


def _global_unit(values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Divide by the largest value over all channels of the network (0 stays 0)."""
    top = max((float(v.max()) for v in values if v.numel()), default=0.0)
    return [v / top if top > 0 else torch.zeros_like(v) for v in values]


@register
class CPMC(Criterion):
    """score_k = w̃_k / (1 + α·f̃_k + β·p̃_k), with every term divided by its network-wide maximum.

    For the channel group g of channel k:

    * w_k = Σ over the group's conv/linear producers of Σ|W[k]| (the filter) + Σ over its
      conv/linear consumers of Σ|W[:, k]| (the next layer's input slice that disappears with the
      feature map: *weight dependency*); biases and BatchNorm are left out;
    * f_k = MACs per sample removed with the channel (producer filters and consumer slices, each
      entry times its layer's output positions; counted like ``measure.macs``);
    * p_k = parameters removed with the channel (weights, biases, BatchNorm scale/shift);
    * global normalisation: x̃ = x / max over every channel of every group of x;
    * score_k = w̃_k / (1 + α f̃_k + β p̃_k), defaults α = β = 1: importance rises with the
      weights, falls with cost; a channel whose filter or consumers are all zero keeps only the
      other half of w, and an unused channel (zero filter and zero consumers) scores 0.

    Needs one calibration sample (the first of ``ctx.batches``) for the output sizes behind f.

    What is whose: the three aspects (weights, computational cost, parameter quantity), weight
    dependency (filter + the next layer's partial weights), global normalisation and global ranking
    are Yan et al.'s; the L1 form of w, the max normalisation, the quotient combination and its
    defaults are **our reading** (the paper's exact formula is not in the abstract).

    Allocation: ``global`` is natural (the paper removes channels by "global ranking"; the plugin
    uses it unless ``--prune-allocation`` says otherwise, and :meth:`plan` defaults to it).
    ``layerwise`` works too, and then ranks by w alone, since all channels of one group share
    f and p.
    """

    name = "cpmc"
    needs_data = True  # one sample, for output sizes only
    summary = "filter + next-layer weights over MACs and params, global ranking (Yan et al. 2020)"
    cost = "one read of the weights and one forward pass of one sample"
    natural_allocation: ClassVar[str] = "global"
    alpha: float = 1.0
    beta: float = 1.0

    def __init__(self, alpha: float | None = None, beta: float | None = None):
        if alpha is not None:
            self.alpha = alpha
        if beta is not None:
            self.beta = beta

    def terms(self, ctx: ScoringContext) -> dict[str, ChannelTerms]:
        positions = output_positions(ctx.model, ctx.groups, example_of(ctx.batches, self.name))
        return {g.name: channel_terms(ctx.model, g, positions) for g in ctx.groups}

    def scores(self, ctx: ScoringContext) -> Scores:
        terms = self.terms(ctx)
        names = list(terms)
        w = _global_unit([terms[n].weight for n in names])
        f = _global_unit([terms[n].macs for n in names])
        p = _global_unit([terms[n].params for n in names])
        return {n: w[i] / (1.0 + self.alpha * f[i] + self.beta * p[i]) for i, n in enumerate(names)}

    def plan(self, ctx: ScoringContext, ratio: float, allocation: Allocation = "global") -> PrunePlan:
        return plan_from_scores(ctx.groups, one_shot_scores(self, ctx), ratio, allocation)
