"""``bn-error``: the error that removing channels leaves at the next BatchNorm, predicted from
BatchNorm statistics and weights alone, with the removed set chosen greedily.

The channel model (a BatchNorm output in eval mode is roughly N(β, γ²), and the mean of its
rectified value has a closed form) is the one behind the analytic bias correction of Nagel, van
Baalen, Blankevoort, Welling, *Data-Free Quantization Through Weight Equalization and Bias
Correction*, ICCV 2019. Scoring a channel by what it sends through the next layer's weights is
the weight dependency of CPMC (Yan et al. 2020) and the next-layer view of ThiNet (Luo, Wu,
Lin, ICCV 2017), which reconstructs the next layer's output from data. The
error model, the coherent sum of mean shifts and the greedy choice are **our own reading**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..devices import model_device
from ..groups import ChannelGroup, batchnorm_scale, is_batchnorm, is_conv_or_linear, member_weight_slices
from ..plan import rank_keys
from ._activations import CallTrace, chain_ends, example_of, first_reader, trace_calls
from .base import Criterion, ScoringContext, Scores
from .registry import register


@dataclass(frozen=True)
class ChannelMoments:
    """Mean and variance of every channel of a group after its activation (float64)."""

    mean: torch.Tensor
    var: torch.Tensor


def rectified_moments(mu: torch.Tensor, sd: torch.Tensor) -> ChannelMoments:
    """Mean and variance of ReLU(z) for z ~ N(mu, sd²), element-wise; sd = 0 gives ReLU(mu), 0.

    E[ReLU(z)] = mu·Φ(t) + sd·φ(t) and E[ReLU(z)²] = (mu² + sd²)·Φ(t) + mu·sd·φ(t), t = mu/sd.
    """
    sd = sd.abs()
    live = sd > 0
    t = mu / torch.where(live, sd, torch.ones_like(sd))
    cdf = 0.5 * (1.0 + torch.erf(t / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    first = torch.where(live, mu * cdf + sd * pdf, mu.clamp(min=0))
    second = torch.where(live, (mu * mu + sd * sd) * cdf + mu * sd * pdf, mu.clamp(min=0) ** 2)
    return ChannelMoments(first, (second - first * first).clamp(min=0))


def _per_channel(values: torch.Tensor, indices: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """One value per channel of a member: the mean over the channel's positions."""
    return torch.stack([values[list(idx)].mean() for idx in indices])


def channel_moments(
    model: nn.Module, group: ChannelGroup, trace: CallTrace, rectify: bool = True, before: int | None = None
) -> ChannelMoments:
    """Each channel's pre-activation N(mu, sd²), summed over the chains that end in it, rectified.

    A chain ending in a BatchNorm gives N(β, γ²) (its running statistics normalise the input); one
    ending in a conv/linear without BatchNorm gives N(b, ‖W_c‖²), its output for white input of
    unit variance. Several chains (a residual stream) add, taken independent; with ``before`` (a
    call index of the trace), only the chains that ran before it: what a consumer at that point
    of a stream reads. A group with no such chain gets N(0, 1) for every channel, so that only
    its consumers' weights rank it.
    """
    mu = torch.zeros(group.size, dtype=torch.float64, device=model_device(model))
    var = torch.zeros(group.size, dtype=torch.float64, device=mu.device)
    found = False
    for index, member in chain_ends(trace, group):
        if before is not None and index >= before:
            continue
        module = model.get_submodule(member.module)
        if is_batchnorm(module) and module.affine:
            mu += _per_channel(module.bias.detach().double(), member.indices)
            var += _per_channel(module.weight.detach().double() ** 2, member.indices)
        elif is_conv_or_linear(module):
            for c, parts in enumerate(member_weight_slices(model, member)):
                var[c] += float((parts[0].double() ** 2).sum()) / len(member.indices[c])
                if len(parts) > 1:
                    mu[c] += float(parts[1].double().mean())
        else:
            continue
        found = True
    if not found:
        mu, var = torch.zeros_like(mu), torch.ones_like(var)
    if not rectify:
        return ChannelMoments(mu, var)
    return rectified_moments(mu, var.sqrt())


def next_batchnorm(model: nn.Module, trace: CallTrace, consumer: str) -> nn.Module | None:
    """The BatchNorm that reads ``consumer``'s output directly, or None."""
    index = trace.first_call.get(consumer)
    reader = None if index is None else first_reader(model, trace, index, (nn.modules.batchnorm._BatchNorm,))
    return None if reader is None else model.get_submodule(reader.name)


def output_scale(model: nn.Module, trace: CallTrace, consumer: str, width: int) -> torch.Tensor:
    """γ/σ of the BatchNorm that reads ``consumer``'s output directly; ones when there is none."""
    bn = next_batchnorm(model, trace, consumer)
    if bn is None:
        return torch.ones(width, dtype=torch.float64, device=model_device(model))
    return batchnorm_scale(bn)


def error_gram(model: nn.Module, group: ChannelGroup, trace: CallTrace, rectify: bool = True) -> torch.Tensor:
    """G (channels × channels): E‖Σ_{c∈R} e_c‖² = Σ_{c,d∈R} G[c, d] for any removed set R.

    e_c is what channel c sends through every conv/linear consumer j, scaled by γ/σ of the
    BatchNorm after j (the error as the next BatchNorm outputs it):
    G = Σ_j (m_j m_jᵀ) ⊙ (V_j V_jᵀ) + diag(v_j · Q_j), with m_j, v_j the channel's mean and
    variance where j reads it (:func:`channel_moments` with the chains that ran before j),
    V_j[c, o] = s_o Σ_k W_j[o, c, k] (the mean shift, coherent over positions and channels) and
    Q_j[c] = Σ_o s_o² Σ_k W_j[o, c, k]² (fluctuations, taken independent over positions and
    channels).
    """
    gram = torch.zeros(group.size, group.size, dtype=torch.float64, device=model_device(model))
    for member in group.consumers():
        module = model.get_submodule(member.module)
        if not is_conv_or_linear(module):
            continue
        moments = channel_moments(model, group, trace, rectify, before=trace.first_call.get(member.module))
        outputs = module.weight.shape[0]
        slices = [parts[0].double().reshape(outputs, -1) for parts in member_weight_slices(model, member)]
        scale = output_scale(model, trace, member.module, outputs)
        shift = torch.stack([w.sum(dim=1) for w in slices]) * scale * moments.mean[:, None]  # (channels, outputs)
        spread = torch.stack([((w**2).sum(dim=1) * scale**2).sum() for w in slices])
        gram += shift @ shift.T + torch.diag(moments.var * spread)
    return gram


def greedy_scores(gram: torch.Tensor) -> torch.Tensor:
    """Remove, one at a time, the channel that adds least to 1ᵀ G_RR 1; score = √ of that error
    once the channel and all removed before it are gone, made strictly increasing along the
    removal order (running maximum, ties raised by one ulp) so that the lowest k scores are the
    greedy's first k removals."""
    n = gram.shape[0]
    cost = gram.diagonal().clone()  # marginal error of removing each channel next
    left = torch.ones(n, dtype=torch.bool, device=gram.device)
    scores = torch.empty(n, dtype=torch.float64, device=gram.device)
    error, previous = 0.0, -1.0
    for _ in range(n):
        # rounded (plan.rank_keys): a near-tie goes to the lower index on every machine
        c = int(torch.argmin(rank_keys(torch.where(left, cost, torch.full_like(cost, math.inf)))))
        error += float(cost[c])
        score = math.sqrt(max(error, 0.0))
        previous = score if score > previous else math.nextafter(previous, math.inf)
        scores[c] = previous
        left[c] = False
        cost += 2.0 * gram[:, c]
    return scores


@register
class BNError(Criterion):
    """Greedy removal order by the predicted error at the consumers' BatchNorm outputs.

    Channel c of a group, after its BatchNorm and ReLU, is modelled as a_c = ReLU(z_c),
    z_c ~ N(β_c, γ_c²) (in a residual stream, summed over the chains that ran before the
    consumer; N(b_c, ‖W_c‖²) for a chain without BatchNorm; see :func:`channel_moments`), with
    mean m_c and variance v_c
    (:func:`rectified_moments`). Removing the set R changes the output of each consumer j,
    as the BatchNorm after it (scale s_o = γ_o/σ_o; 1 without one) sees it, by

        E‖e_R‖² = ‖Σ_{c∈R} m_c V_j[c]‖² + Σ_{c∈R} v_c Q_j[c]    (summed over consumers j)

    (see :func:`error_gram`): mean shifts add *coherently* — in a one-shot pruned network the
    stale BatchNorm statistics cannot absorb them, and two channels whose shifts cancel cost
    less together than either alone — while fluctuations add in quadrature. Minimising this
    over R is a quadratic subset problem; the criterion removes channels greedily
    (:func:`greedy_scores`), and a channel's score is √E‖e_R‖² at the point it goes.

    Data: none is read for the scores (weights and BatchNorm parameters only), but one sample
    (the first of ``ctx.batches``) is run once to trace which module reads which output: the
    chains that end in each group and the BatchNorm after each consumer.

    What is whose: N(β, γ²) for a BatchNorm output and the rectified-Gaussian mean are Nagel et
    al.'s (data-free bias correction, ICCV 2019); the consumer weights as part of a channel's
    importance follow CPMC's weight dependency. **Our reading**: measuring the error at the next
    BatchNorm's output, the coherent/incoherent split, independence across positions and
    channels, ReLU after every group (the activation is often functional and invisible to the
    trace; ``rectify=False`` drops it), the white-input fallback without BatchNorm, and the
    greedy. The simpler per-channel products E[ReLU(z_c)]·‖W_consumer[:, c]‖ and the BN-folded
    CPMC weight term were measured on the CIFAR ResNets and lost one-shot.

    Scope: the error model is that of a *one-shot* pruned network, whose BatchNorm statistics
    are stale. BatchNorm recalibration absorbs mean shifts, and then keeping the channels with the
    largest fluctuations matters more: on the CIFAR ResNets the criterion wins one-shot and loses
    to Torch-Pruning's LAMP after recalibration (benchmarks/criteria.py).

    Allocation: ``layerwise`` is natural (the greedy runs per group; the k lowest scores are its
    first k removals); ``global`` compares √ errors in BatchNorm-output units across groups.
    """

    name = "bn-error"
    needs_data = True  # one sample, to trace the graph; no statistic of the data is used
    summary = "greedy on the error predicted at the next BatchNorm from BN statistics (data-free)"
    cost = "one read of the weights, one traced forward pass of one sample, a greedy per group"
    natural_allocation: ClassVar[str] = "layerwise"
    rectify: bool = True

    def __init__(self, rectify: bool | None = None):
        if rectify is not None:
            self.rectify = rectify

    def scores(self, ctx: ScoringContext) -> Scores:
        trace = trace_calls(ctx.model, example_of(ctx.batches, self.name))
        return {g.name: greedy_scores(error_gram(ctx.model, g, trace, self.rectify)) for g in ctx.groups}
