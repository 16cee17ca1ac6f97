"""The criterion interface: what every pruning criterion gets and returns.

A criterion receives a :class:`ScoringContext` (the model, its channel groups, calibration batches
when it needs data, a seed) and returns one score per channel of every group: higher means more
important, so the lowest go first. Data-free criteria (``l1``) ignore the batches; data-driven ones
(``taylor``, ``attribution``) run them through the model; iterative and greedy criteria (``car``)
override :meth:`Criterion.plan` to re-score between removals.

Criteria never import pytest or the plugin: they are a library usable from a notebook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Protocol, Sequence

import torch
from torch import nn

from ..groups import ChannelGroup
from ..plan import Allocation, PrunePlan, plan_from_scores

Scores = dict[str, torch.Tensor]  # group name → one float score per channel of the group


class SharedDensePass(Protocol):
    """A dense pass over the calibration images that a criterion's own hooks can ride
    (:class:`pytest_prune.recovery.lsq_shared.SharedLsqCapture`)."""

    def run_with(self, samplings: Sequence, images: Sequence[torch.Tensor]) -> bool:
        """Run the hooks of ``samplings`` (which read the images of the batches ``images``) in
        the pass; False, with nothing run, where the pass does not start with those images."""


@dataclass
class ScoringContext:
    model: nn.Module
    groups: Sequence[ChannelGroup]
    # (inputs, labels) batches of calibration data, already on ``device``; empty for data-free runs
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    loss_fn: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    # a recovery step of the run whose dense capture may ride a criterion's own dense pass over
    # the calibration images (lsq's, for recon: pytest_prune.recovery.lsq_shared); None: no such step
    shared_dense_pass: SharedDensePass | None = None
    # the run's one-shot scores of this criterion (scored once, shared by every target): an
    # iterative plan's first round, on the unpruned model, is exactly them; None: score anew
    kept_scores: Callable[[], Scores] | None = None


class Criterion(ABC):
    """Base class of every criterion; subclasses register themselves with :func:`register`."""

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False
    summary: ClassVar[str] = ""  # one line for the README's table and --help
    cost: ClassVar[str] = ""  # what scoring costs, in forward/backward passes or weight reads
    # how a ratio is spread over groups when the caller does not say (the plugin without
    # --prune-allocation): "global" only where the criterion's scores are meant to compare across
    # layers (its paper ranks globally, or normalises for that purpose); the docstring says why
    natural_allocation: ClassVar[Allocation] = "layerwise"
    # whether plan() ranks scores() once (one-shot); iterative and greedy criteria re-score as
    # channels go, so a caller holding their scores must still call plan()
    plans_from_scores: ClassVar[bool] = True

    @abstractmethod
    def scores(self, ctx: ScoringContext) -> Scores:
        """One score per channel of every group (higher = keep)."""

    def plan(self, ctx: ScoringContext, ratio: float, allocation: Allocation = "layerwise") -> PrunePlan:
        """Choose the channels to remove; one-shot criteria rank their scores once."""
        return plan_from_scores(ctx.groups, one_shot_scores(self, ctx), ratio, allocation)


def one_shot_scores(criterion: Criterion, ctx: ScoringContext) -> Scores:
    """``criterion``'s scores on the unpruned model: the run's kept ones where ``ctx`` carries them
    (``kept_scores``), else scored now."""
    return ctx.kept_scores() if ctx.kept_scores is not None else criterion.scores(ctx)
