"""Recovery specs: ``lsq+bn`` → a pipeline of steps → a recovered copy of the pruned model.

A spec is one or more steps joined by ``+`` and run left to right (``lsq+bn``, ``lsq+finetune:1``),
or ``none``. :func:`parse_recovery` checks it and gives its canonical name (lower case, no spaces,
default arguments left out), which is what gate ids and baselines record.

:meth:`RecoveryPipeline.recover` never changes its arguments: it recovers a deep copy of the pruned
model (so one pruning can be measured under several recoveries) and returns it, on the pruned
model's device and with its train/eval flags; the dense model is only read.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..data.bundle import DataBundle
from ..devices import model_device, resolve_device
from ..errors import SpecError
from ..groups import ChannelGroup
from ..modes import modes_kept
from ..plan import PrunePlan
from .base import Progress, RecoveryContext, RecoveryStep, StepReport, no_progress
from .registry import get_step


@dataclass
class RecoveryResult:
    """The recovered model and what recovering it took."""

    model: nn.Module
    spec: str
    seconds: float
    steps: list[StepReport]

    @property
    def notes(self) -> list[str]:
        return [f"{s.step}: {note}" for s in self.steps for note in s.notes]

    @property
    def skipped(self) -> dict[str, str]:
        """``step: module`` → why the step left that module alone."""
        return {f"{s.step}: {name}": why for s in self.steps for name, why in s.skipped.items()}


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself if it is all on ``device``, else a copy there (the original must not move)."""
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device == device for t in tensors):
        return model
    return copy.deepcopy(model).to(device)


@dataclass(frozen=True)
class RecoveryPipeline:
    """Recovery steps run in order on a copy of the pruned model."""

    steps: tuple[RecoveryStep, ...]

    @property
    def name(self) -> str:
        return "+".join(step.spec for step in self.steps)

    def __str__(self) -> str:
        return self.name

    def recover(
        self,
        dense: nn.Module,
        pruned: nn.Module,
        data: DataBundle,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        progress: Progress | None = None,
        groups: Sequence[ChannelGroup] | None = None,
        plan: PrunePlan | None = None,
    ) -> RecoveryResult:
        """Recover a copy of ``pruned`` against ``dense``; neither argument is changed.

        ``groups`` and ``plan`` (what surgery removed) are optional: ``lsq`` needs them only for
        layers whose output channels were pruned as well as their inputs. ``progress`` receives
        one line per step (and per epoch of fine-tuning).
        """
        target = resolve_device(device)
        say = progress or no_progress
        home = model_device(pruned)
        start = time.perf_counter()
        model = copy.deepcopy(pruned).to(target)
        reference = on_device(dense, target)
        reports = []
        with modes_kept(reference):
            for i, step in enumerate(self.steps, start=1):
                say(f"recovery {self.name}: step {i}/{len(self.steps)} {step.spec}")
                ctx = RecoveryContext(
                    dense=reference, model=model, data=data, seed=seed, device=target,
                    progress=say, groups=groups, plan=plan,
                )
                step_start = time.perf_counter()
                report = step.apply(ctx)
                report.seconds = time.perf_counter() - step_start
                reports.append(report)
        return RecoveryResult(model.to(home), self.name, time.perf_counter() - start, reports)


def parse_recovery(spec: str) -> RecoveryPipeline:
    """``"lsq+bn"`` → the pipeline of those steps; a :class:`SpecError` that names the fix if not."""
    parts = [part.strip() for part in str(spec).split("+")]
    if not any(parts):
        raise SpecError("the recovery spec is empty; write none, or steps such as lsq+bn")
    if not all(parts):
        raise SpecError(f"recovery spec {spec!r} has an empty step; join steps with single '+' (lsq+bn)")
    steps = tuple(get_step(part) for part in parts)
    if len(steps) > 1 and any(step.name == "none" for step in steps):
        raise SpecError(f"recovery spec {spec!r} combines 'none' with other steps; write only the steps")
    return RecoveryPipeline(steps)


def check_recoveries_apply(model: nn.Module, specs: Sequence[str]) -> None:
    """Refuse a recovery whose ``bn`` step would be a no-op on ``model`` (no BatchNorm layer): its
    gates would only duplicate the method without it."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    pointless = [spec for spec in specs if any(step.name == "bn" for step in parse_recovery(spec).steps)]
    if pointless:
        raise SpecError(
            f"--prune-recovery {','.join(pointless)}: the model has no BatchNorm layer, so BatchNorm "
            "recalibration ('bn') changes nothing and would gate a duplicate of the method without "
            "it; drop the 'bn' step for this model"
        )
