"""``recal-error``: the error removing channels leaves at the next BatchNorm once BatchNorm is
recalibrated, measured on calibration data, with the removed set chosen greedily.

The companion of :mod:`.bn_error` for pruning followed by BatchNorm recalibration (``--prune-recovery
bn``), the recovery a team runs first. ``bn-error`` predicts, without data, the error of a one-shot
pruned network, where stale BatchNorm statistics make the removed channels' mean shifts the main
cost; recalibration absorbs those shifts, so here they are taken out and what is left — the
fluctuations the removed channels carried to the next layer, and how they cancel — is measured.

Measuring the next layer's output rather than a channel's own magnitude is ThiNet's view (Luo, Wu,
Lin, ICCV 2017, which reconstructs from data); summing over consumers follows CPMC's weight
dependency (Yan et al. 2020). The centring, the BatchNorm scaling and the greedy are **our own**.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import nn

from ..devices import model_device
from ..groups import ChannelGroup, GroupMember, is_conv_or_linear
from ._activations import CallTrace, calibration_subset, example_of, one_pass, trace_calls
from .base import Criterion, ScoringContext, Scores
from .bn_error import greedy_scores, next_batchnorm, output_scale
from .registry import register

# floats of per-channel contributions held at once (N × channels × outputs × positions): 128 MiB
CHUNK_FLOATS = 1 << 25


def _contributions(module: nn.Module, x: torch.Tensor, member: GroupMember, scale: torch.Tensor) -> torch.Tensor:
    """Y[n, c, o, p]: what channel c of the group sends to output o at position p of ``module``
    on input ``x``, scaled by γ/σ of the BatchNorm after it."""
    per_channel = []
    for idx in member.indices:
        idx = list(idx)
        weight = module.weight.index_select(1, torch.as_tensor(idx, device=x.device))
        if isinstance(module, nn.Linear):
            y = nn.functional.linear(x[..., idx], weight)
            y = y.movedim(-1, 1) if y.dim() > 2 else y
        else:
            y = module._conv_forward(x[:, idx], weight, None)
        y = y * scale.to(y.dtype).view(1, -1, *([1] * (y.dim() - 2)))
        per_channel.append(y.flatten(2) if y.dim() > 2 else y.unsqueeze(-1))
    return torch.stack(per_channel, 1)


def _scored_consumers(model: nn.Module, group: ChannelGroup) -> list[tuple[GroupMember, nn.Module]]:
    """The conv/linear consumers whose input slices a channel owns alone (grouped convs mix a
    channel with its group's others only, and are left out; so are transposed convs, whose
    contributions this criterion does not compute)."""
    out = []
    for member in group.consumers():
        module = model.get_submodule(member.module)
        plain = getattr(module, "groups", 1) == 1 and not getattr(module, "transposed", False)
        if is_conv_or_linear(module) and plain:
            out.append((member, module))
    return out


def measured_error_gram(
    model: nn.Module,
    group: ChannelGroup,
    trace: CallTrace,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    centred: bool = True,
) -> torch.Tensor:
    """G (channels × channels) with Σ_{c,d∈R} G[c, d] = the mean over samples of ‖Σ_{c∈R} Y_c‖²,
    summed over the group's consumers, Y_c the contribution of channel c at the next BatchNorm's
    output (:func:`_contributions`); ``centred`` first subtracts from each Y_c[o] its mean over
    samples and positions — the shift a BatchNorm recalibration absorbs — for the consumers a
    BatchNorm follows (without one nothing absorbs the shift, and it stays)."""
    size = group.size
    raw = torch.zeros(size, size, dtype=torch.float64, device=model_device(model))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    consumers = _scored_consumers(model, group)
    scales = {m.module: output_scale(model, trace, m.module, mod.weight.shape[0]) for m, mod in consumers}

    def make_hook(member: GroupMember):
        def hook(module, inputs, output):
            x = inputs[0]
            per_sample = max(1, output[0].numel() * size)
            step = max(1, CHUNK_FLOATS // per_sample)
            for start in range(0, x.shape[0], step):
                y = _contributions(module, x[start : start + step], member, scales[member.module])
                flat = y.flatten(2)
                raw.add_(torch.einsum("ncd,nkd->ck", flat, flat).double())
                sums[member.module] = sums.get(member.module, 0) + y.sum(dim=(0, 3)).double()
                counts[member.module] = counts.get(member.module, 0) + y.shape[0] * y.shape[3]

        return hook

    samples = 0
    for x, _ in batches:
        one_pass(model, x, {module: make_hook(member) for member, module in consumers})
        samples += x.shape[0]
    if centred:
        for name, total in sums.items():
            if next_batchnorm(model, trace, name) is not None:
                raw -= total @ total.T / counts[name]
    return raw / max(samples, 1)


@register
class RecalError(Criterion):
    """Greedy removal order by the measured error at the consumers' BatchNorm outputs, after the
    mean shift BatchNorm recalibration absorbs.

    For channel c of a group and each conv/linear consumer j, Y_c = W_j[:, c] ∗ a_c (its
    contribution to j's output, a_c the channel as j reads it on calibration images), scaled per
    output by s_o = γ_o/σ_o of the BatchNorm after j and centred per output over samples and
    positions (neither without a BatchNorm after j: then no recalibration absorbs the mean shift).
    Removing the set R leaves the error

        E‖Σ_{c∈R} Ỹ_c‖² = Σ_{c,d∈R} G[c, d],   G[c, d] = Σ_j E⟨Ỹ_c, Ỹ_d⟩

    (:func:`measured_error_gram`): channels whose contributions cancel are cheap together, a
    duplicated channel's copy costs what the pair differs by. Channels are removed greedily
    (:func:`~pytest_prune.criteria.bn_error.greedy_scores`); a channel's score is √error at the
    point it goes. Grouped and depthwise consumers are not measured (a group whose consumers are
    all such gets zero scores).

    Data: the first ``max_samples`` (512) calibration samples; the channels are measured as the
    consumers read them, so no activation has to be assumed. Cost: one forward pass over them
    and, per consumer, one convolution per channel of one input channel (the consumer's work
    once) and a channels² × outputs × positions product.

    Scope: aimed at pruning followed by BatchNorm recalibration; for one-shot pruning, where the
    mean shifts stay, ``bn-error`` is the one (measured: benchmarks/criteria.py).
    """

    name = "recal-error"
    needs_data = True
    summary = "greedy on the measured error at the next BatchNorm after recalibration"
    cost = "1 forward pass over 512 samples + one single-channel conv per channel and consumer"
    natural_allocation: ClassVar[str] = "layerwise"
    max_samples: int = 512
    centred: bool = True

    def __init__(self, max_samples: int | None = None, centred: bool | None = None):
        if max_samples is not None:
            self.max_samples = max_samples
        if centred is not None:
            self.centred = centred

    def scores(self, ctx: ScoringContext) -> Scores:
        batches = calibration_subset(ctx.batches, self.max_samples)
        trace = trace_calls(ctx.model, example_of(batches, self.name))
        with torch.no_grad():
            return {
                g.name: greedy_scores(measured_error_gram(ctx.model, g, trace, batches, self.centred))
                for g in ctx.groups
            }
