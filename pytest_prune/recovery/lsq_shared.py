"""``lsq``'s dense capture taken in another dense pass of the run: ``recon``'s scoring pass.

``recon`` (:mod:`pytest_prune.criteria.recon`) scores channels from one dense pass over the
calibration images; ``lsq``, the refit it is made for, starts with one dense pass over the same
images. When the run will apply ``lsq`` (the plugin's ``--prune-recovery``), the two are one pass:
``recon``'s hooks and ``lsq``'s ride the same forward, and ``lsq``'s capture is kept
(:mod:`.lsq_cache`) for the ``lsq`` steps that follow, which then run only their pruned pass. So
selection and refit cost one dense pass for the run plus one pruned pass per method.

The capture is exactly the one ``lsq`` would take itself (:mod:`.lsq_dense`): its batches (the
first ``lsq:N`` calibration images, in batches of ``DENSE_BATCH``), its seed and positions, its fx
trace for the residual tails, and its layers, which are every layer ``lsq`` can refit over the
run's groups, whatever the plan spares; so every ``lsq`` of the run hits, with the same weights as
its own pass would give (``tests/recovery/test_lsq_shared.py``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..data.bundle import DataBundle
from ..groups import ChannelGroup
from . import lsq_cache
from .base import calibration_images
from .lsq import LeastSquaresReconstruction
from .lsq_capture import DenseSampling
from .lsq_dense import dense_capture


class SharedLsqCapture:
    """The dense capture of one ``lsq`` step of a run, for a criterion's dense pass to take too."""

    def __init__(
        self, step: LeastSquaresReconstruction, dense: nn.Module, data: DataBundle,
        groups: Sequence[ChannelGroup], seed: int, device: torch.device,
    ):
        self.step, self.dense, self.data, self.groups = step, dense, data, groups
        self.seed, self.device = seed, device

    def run_with(self, samplings: Sequence[DenseSampling], images: Sequence[torch.Tensor]) -> bool:
        """Run ``samplings`` (which read the images of the batches ``images``, the first of the
        pass) in ``lsq``'s own dense pass and keep ``lsq``'s capture; False, with nothing run, where
        that pass does not start with those images or is already kept (the caller runs its own)."""
        batches = calibration_images(self.data, self.step.images, self.step.DENSE_BATCH, self.device, self.step.spec)
        capture = dense_capture(
            self.dense, self.groups, (), batches,
            per_image=self.step.positions, seed=self.seed, device=self.device, residual=self.step.residual,
        )
        if not capture.layers or not starts_with(batches, images) or lsq_cache.holds(self.dense, capture.key):
            return False
        capture.take(self.dense, batches, samplings)
        return True


def starts_with(batches: Sequence[torch.Tensor], images: Sequence[torch.Tensor]) -> bool:
    """Whether the images of ``batches`` begin with those of ``images`` (both lists of batches,
    batched differently), compared piece by piece, without concatenating either."""
    wanted = [x for x in images if len(x)]
    i = offset = 0  # the next image wanted: wanted[i][offset]
    for x in batches:
        start = 0
        while start < len(x) and i < len(wanted):
            take = min(len(x) - start, len(wanted[i]) - offset)
            if not torch.equal(x[start : start + take], wanted[i][offset : offset + take]):
                return False
            start, offset = start + take, offset + take
            if offset == len(wanted[i]):
                i, offset = i + 1, 0
        if i == len(wanted):
            return True
    return i == len(wanted)
