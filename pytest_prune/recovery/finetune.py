"""``finetune:E`` and ``finetune-kd:E``: E epochs of SGD on the training split.

The standard recovery of the pruning literature (Li et al., ICLR 2017; He et al., ICCV 2017): train
the pruned network for a few more epochs. The defaults are the usual CIFAR recipe: SGD with Nesterov
momentum 0.9, weight decay 5e-4 (on every parameter), batch 128, learning rate 0.01 annealed to 0
along a cosine over all the steps (Loshchilov and Hutter, "SGDR", ICLR 2017).

``finetune-kd`` distils from the dense model's logits instead of training on the labels alone
(Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015):

    loss = α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y),   T = 4, α = 0.9,

with ``s`` the pruned model's logits and ``t`` the dense model's (eval mode, no gradients); the T²
keeps the soft term's gradients on the scale of the hard one's.

Determinism: shuffling draws from a generator seeded with the run's seed, and ``torch.manual_seed``
seeds dropout and the like inside ``torch.random.fork_rng``, so the caller's global random state is
left as it was; on CPU the same seed gives bitwise the same weights. On CUDA cuDNN is asked for
deterministic kernels for the duration of the step.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from ..errors import DataError
from ..modes import modes_kept
from .base import RecoveryContext, RecoveryStep, StepReport
from .registry import register


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for the block and give the caller's random state back afterwards."""
    cuda = device.type == "cuda"
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@register
class FineTune(RecoveryStep):
    """E epochs of SGD on the labels: lr 0.01 → 0 (cosine, per step), Nesterov momentum 0.9,
    weight decay 5e-4, batch 128. ``max_batches`` caps the batches of each epoch (quick runs, tests).
    """

    name = "finetune"
    summary = "E epochs of SGD on the training split (cosine lr 0.01 → 0)"
    cost = "E epochs of forward and backward passes over the training split"
    argument = "epochs"
    argument_required = True

    def __init__(
        self,
        epochs: int,
        *,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        batch_size: int = 128,
        max_batches: int | None = None,
    ):
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_batches = max_batches

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.epochs}"

    def loss(self, ctx: RecoveryContext, x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def apply(self, ctx: RecoveryContext) -> StepReport:
        report = StepReport(self.spec)
        model = ctx.model
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            report.notes.append("the model has no trainable parameters: nothing to fine-tune")
            return report
        with seeded(ctx.seed, ctx.device), modes_kept(model, ctx.dense):
            loader = ctx.data.loader("train", batch_size=self.batch_size, shuffle=True, seed=ctx.seed)
            per_epoch = len(loader) if self.max_batches is None else min(len(loader), self.max_batches)
            total = self.epochs * per_epoch
            if total == 0:
                raise DataError(
                    f"recovery step {self.spec!r} needs training images, but the data "
                    f"{ctx.data.name!r} has an empty train split; give it one or drop the step"
                )
            optimizer = torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, nesterov=True, weight_decay=self.weight_decay
            )
            step = 0

            def set_lr() -> None:  # cosine from lr at step 0 to 0 after the last step
                for group in optimizer.param_groups:
                    group["lr"] = 0.5 * self.lr * (1.0 + math.cos(math.pi * step / total))

            model.train()
            ctx.dense.eval()
            for epoch in range(1, self.epochs + 1):
                start, losses = time.perf_counter(), []
                for batch, (x, y) in enumerate(loader):
                    if batch >= per_epoch:
                        break
                    if len(x) < 2:
                        continue  # a last batch of one sample: BatchNorm cannot train on it
                    x, y = x.to(ctx.device), y.to(ctx.device)
                    set_lr()
                    loss = self.loss(ctx, x, model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    losses.append(float(loss.detach()))
                mean = sum(losses) / max(len(losses), 1)
                note = (
                    f"epoch {epoch}/{self.epochs}: mean training loss {mean:.4f} "
                    f"over {len(losses)} batches ({time.perf_counter() - start:.1f} s)"
                )
                report.notes.append(note)
                ctx.progress(f"{self.spec} {note}")
            optimizer.zero_grad(set_to_none=True)  # leave no gradients behind on the returned model
        return report


@register
class DistilledFineTune(FineTune):
    """Fine-tuning with knowledge distillation from the dense model: T = 4, α = 0.9 (Hinton et al.)."""

    name = "finetune-kd"
    summary = "E epochs of SGD distilling the dense model's logits (T=4, α=0.9)"
    cost = "E epochs of forward and backward passes, plus a dense forward pass per batch"

    TEMPERATURE = 4.0
    ALPHA = 0.9

    def loss(self, ctx: RecoveryContext, x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = ctx.dense(x)
        t = self.TEMPERATURE
        soft = F.kl_div(
            F.log_softmax(logits / t, dim=1), F.log_softmax(teacher / t, dim=1),
            reduction="batchmean", log_target=True,
        )
        return self.ALPHA * t * t * soft + (1.0 - self.ALPHA) * F.cross_entropy(logits, labels)
