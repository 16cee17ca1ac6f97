"""``bn``: re-estimate BatchNorm running statistics on calibration data.

Pruning changes what every BatchNorm after a pruned layer sees, while its running mean and variance
still describe the dense network; re-estimating them is the cheapest recovery there is (Li, Wang,
Shi, Liu, Hou, "Revisiting Batch Normalization for Practical Domain Adaptation" (AdaBN), ICLR
workshop 2017; applied to pruning by Li, Gu, Zhang, Van Gool, Timofte, "EagleEye", ECCV 2020).

Procedure: the whole model in eval mode (dropout and the like stay off) except the BatchNorm layers,
which are put in training mode with their running statistics reset and ``momentum=None``; then
``images`` calibration images are run through it without gradients. Each BatchNorm therefore
normalises every batch with that batch's statistics, as in training, and the layers after it see
what they would see in training. PyTorch's own update with ``momentum=None`` is a cumulative
average over *batches*: it weighs a short last batch like a full one and averages the per-batch
variances, which misses the spread between batch means. A hook on each BatchNorm's input therefore
pools the exact per-channel mean and (unbiased, as PyTorch stores it) variance over all the images,
and those are what the layer keeps. Afterwards every module's train/eval flag and every BatchNorm's
momentum are restored; no other parameter or buffer changes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..groups import is_batchnorm
from ..modes import modes_kept
from .base import RecoveryContext, RecoveryStep, StepReport, calibration_inputs
from .registry import register


class ChannelMoments:
    """Per-channel count, mean and sum of squared deviations, pooled over batches in float64.

    Batches are combined with the pairwise update of Chan, Golub and LeVeque (1979), which stays
    accurate where the naive ``Σx² − n·mean²`` cancels.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()  # channel is dim 1
        n = flat.shape[1]
        mean = flat.mean(dim=1)
        m2 = (flat - mean[:, None]).pow(2).sum(dim=1)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.pow(2) * (self.count * n / total)
        self.count = total

    def variance(self) -> torch.Tensor:
        """Unbiased (divided by n − 1), the form BatchNorm's ``running_var`` holds."""
        assert self.m2 is not None
        return self.m2 / max(self.count - 1, 1)


@register
class BatchNormRecalibration(RecoveryStep):
    """running_mean, running_var ← the exact mean and unbiased variance, per channel, of each
    BatchNorm's input over the first ``images`` calibration images (default 2048, or all the
    calibration images if there are fewer), with BatchNorm layers in training mode during the pass.
    """

    name = "bn"
    summary = "re-estimate BatchNorm statistics on calibration data (AdaBN)"
    cost = "one forward pass over the calibration images, no gradients"
    argument = "images"
    argument_example = 512

    DEFAULT_IMAGES = 2048
    BATCH_SIZE = 128  # large batches keep the batch statistics used during the pass close to the pooled ones

    def __init__(self, images: int | None = None):
        self.images = images or self.DEFAULT_IMAGES

    @property
    def spec(self) -> str:
        return self.name if self.images == self.DEFAULT_IMAGES else f"{self.name}:{self.images}"

    def apply(self, ctx: RecoveryContext) -> StepReport:
        report = StepReport(self.spec)
        layers: dict[str, nn.modules.batchnorm._BatchNorm] = {}
        for name, module in ctx.model.named_modules():
            if not is_batchnorm(module):
                continue
            if module.running_mean is None or module.running_var is None:
                report.skipped[name] = (
                    "keeps no running statistics (track_running_stats=False): it always "
                    "normalises with the statistics of the batch it is given"
                )
            else:
                layers[name] = module  # type: ignore[assignment]
        if not layers:
            report.notes.append("no BatchNorm layer with running statistics: nothing to recalibrate")
            return report

        batches = calibration_inputs(ctx, self.images, self.BATCH_SIZE, self.spec)
        saved = {
            name: (bn.momentum, {key: buf.clone() for key, buf in bn.named_buffers()})
            for name, bn in layers.items()
        }
        moments = {name: ChannelMoments() for name in layers}
        hooks = [
            bn.register_forward_pre_hook(lambda _m, args, acc=moments[name]: acc.add(args[0]))
            for name, bn in layers.items()
        ]
        try:
            with modes_kept(ctx.model), torch.no_grad():
                ctx.model.eval()
                for bn in layers.values():
                    bn.reset_running_stats()
                    bn.momentum = None  # cumulative average (replaced by the pooled moments below)
                    bn.train()
                for x in batches:
                    ctx.model(x)
        finally:
            for hook in hooks:
                hook.remove()
            for name, bn in layers.items():
                bn.momentum = saved[name][0]

        with torch.no_grad():
            for name, bn in layers.items():
                acc = moments[name]
                if acc.count == 0:
                    for key, value in saved[name][1].items():
                        getattr(bn, key).copy_(value)
                    report.skipped[name] = (
                        "was never called on the calibration images; its statistics are left as they were"
                    )
                    continue
                bn.running_mean.copy_(acc.mean.to(bn.running_mean.dtype))  # type: ignore[union-attr]
                bn.running_var.copy_(acc.variance().to(bn.running_var.dtype))  # type: ignore[union-attr]
        images = sum(len(x) for x in batches)
        recalibrated = len(layers) - sum(1 for n in layers if n in report.skipped)
        report.notes.append(
            f"{recalibrated} BatchNorm layers re-estimated on {images} calibration images"
        )
        return report
