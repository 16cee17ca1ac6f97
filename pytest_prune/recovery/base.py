"""The recovery-step interface: what every step gets, what it may change, what it reports.

A recovery step repairs a pruned model after surgery and before measurement. It receives a
:class:`RecoveryContext` (the dense reference, the model being recovered, the data, a seed, a
device) and changes ``ctx.model`` **in place**; the pipeline (:mod:`.pipeline`) hands each run
its own copy of the pruned model, so a step never touches the caller's pruned model, and it must
never change ``ctx.dense`` (parameters, buffers, train/eval flags or hooks). Every step returns a
:class:`StepReport` with what it did and which layers it left alone, and why.

Steps never import pytest, the plugin, or Torch-Pruning: they are a library usable from a notebook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch
from torch import nn

from ..data.bundle import DataBundle
from ..errors import DataError, SpecError
from ..groups import ChannelGroup
from ..plan import PrunePlan

Progress = Callable[[str], None]


def no_progress(message: str) -> None:
    """The default progress callback: say nothing."""


@dataclass
class RecoveryContext:
    dense: nn.Module  # the unpruned reference, on ``device``; read only
    model: nn.Module  # the pruned model being recovered, on ``device``; steps change it in place
    data: DataBundle
    seed: int
    device: torch.device
    progress: Progress = no_progress
    # What surgery removed, when the caller knows it: lets ``lsq`` match the outputs of a layer whose
    # output channels were pruned to the dense outputs that survive. Optional.
    groups: Sequence[ChannelGroup] | None = None
    plan: PrunePlan | None = None


@dataclass
class StepReport:
    """What one step did: its canonical spec, time, free-form notes, and layers it left alone."""

    step: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # module name → reason


class RecoveryStep(ABC):
    """Base class of every step; subclasses register themselves with :func:`.registry.register`.

    A step's spec is ``name`` or ``name:N``. ``argument`` names what ``N`` counts (``"images"``,
    ``"epochs"``), or is ``None`` for steps that take no argument; ``argument_required`` says
    whether it must be given. :meth:`from_argument` turns the text after the colon into a step.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # one line for the README's table and --help
    cost: ClassVar[str] = ""  # what the step costs, in passes over which data
    argument: ClassVar[str | None] = None
    argument_required: ClassVar[bool] = False
    argument_example: ClassVar[int] = 1  # a sensible N for error messages

    @classmethod
    def from_argument(cls, argument: str | None) -> "RecoveryStep":
        if argument is None:
            if cls.argument_required:
                raise SpecError(
                    f"recovery step {cls.name!r} needs a number of {cls.argument}: "
                    f"write e.g. {cls.name}:{cls.argument_example}"
                )
            return cls()
        if cls.argument is None:
            raise SpecError(
                f"recovery step {cls.name!r} takes no argument, got {cls.name}:{argument}; "
                f"write {cls.name}"
            )
        text = argument.strip()
        if not text.isdigit() or int(text) < 1:
            raise SpecError(
                f"recovery step {cls.name}:{argument}: the {cls.argument} must be a whole number "
                f"of at least 1; write e.g. {cls.name}:{cls.argument_example}"
            )
        return cls(int(text))  # type: ignore[call-arg]

    @property
    def spec(self) -> str:
        """The canonical spec of this step (defaults left out), used in gate ids."""
        return self.name

    @abstractmethod
    def apply(self, ctx: RecoveryContext) -> StepReport:
        """Recover ``ctx.model`` in place and report what was done."""

    def __repr__(self) -> str:
        return f"<recovery step {self.spec}>"


# -- helpers the steps share ------------------------------------------------------------------


def calibration_inputs(
    ctx: RecoveryContext, count: int | None, batch_size: int, step: str
) -> list[torch.Tensor]:
    """The first ``count`` calibration images (all if fewer) as batches on the device.

    A trailing batch of one image is merged into the one before it: BatchNorm in training mode
    cannot take a single value per channel (a 1-d BatchNorm after a linear layer).
    """
    return calibration_images(ctx.data, count, batch_size, ctx.device, step)


def calibration_images(
    data: DataBundle, count: int | None, batch_size: int, device: torch.device, step: str
) -> list[torch.Tensor]:
    """:func:`calibration_inputs` from the data and device alone (a step's capture taken before
    its context exists: :mod:`.lsq_shared`)."""
    batches = [x for x, _ in data.calibration_batches(count, batch_size, device)]
    if not batches or len(batches[0]) == 0:
        raise DataError(
            f"recovery step {step!r} needs calibration images, but the data {data.name!r} "
            "has an empty calibration split; give the data a calibration split or drop the step"
        )
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches
