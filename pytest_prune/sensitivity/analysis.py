"""Sensitivity analysis: the calibration top-1 when only one channel group is pruned.

For every channel group ``g`` and fraction ``f`` (default :data:`DEFAULT_FRACTIONS`), the
``removal_count(g.size, f)`` channels with the lowest criterion scores are zeroed at every producer
of ``g`` -- masking, not surgery: masked equals pruned, which the surgery property tests prove --
and the model is run on the calibration images (never the evaluation split: the allocation that
reads this table must not be tuned on what the gates measure). A group is all its coupled layers
(a residual stream is one group), so a layer never looks robust because its coupled layers were
left intact.

Recovery (``recovery``):

* ``none``: the masked model as it is;
* ``lsq``: before each of the group's consumers runs, its weights are refit by least squares so
  that on the masked input it gives the dense outputs (the ``lsq`` recovery step's fit:
  He et al. 2017, Luo et al. 2017; the same 16 sampled positions per image and ridge
  1e-4 · tr(XᵀX)/D, the removed input columns left out), in forward order in the same pass, so a
  residual stream's later consumers see the earlier ones refit. Only that group's consumers are
  refit; their weights are restored afterwards.

Cost, in passes of the model over the ``images`` calibration images (at most
:data:`DEFAULT_IMAGES`, one batch): ``1 + G · (1 + F)`` for ``G`` groups and ``F`` fractions --
one dense pass (with ``lsq`` one more: the step's capture of every consumer's dense outputs at the
sampled positions, shared by all groups), then per group one pass that records everything computed
before the group (``PrefixCache``, as in CAR) and stops there, and one replayed pass per fraction
that starts at the group: the prefix is computed once per group, not once per fraction. Every pass
but the first is partial, so the cost is below ``G · F`` full passes by the share of the network in
front of each group. With ``lsq`` each replayed pass also solves one least-squares problem per
consumer of the group. :attr:`SensitivityTable.passes` and ``seconds`` report what a run spent:
cifar-resnet20, 12 groups, 4 fractions, 512 images: 61 passes; cifar-resnet56, 30 groups, 4
fractions, 512 images: 151 passes. The seconds follow images × passes, once per criterion planned
by sensitivity; on one thread of a 2-core machine shared with other jobs
(``benchmarks/sensitivity_cost.py``, no recovery) ResNet-20 took 243-246 s at 512 images, 64 s at
256 and 33 s at 128; ResNet-56 1,332 s at 512 (806-1,480 s in issue 16's runs), 347 s at 256 and
91 s at 128.

Why 512 images and four fractions (the same benchmark: ``l1``, top-1 on the exact 932 after
``lsq``, paired against the 512-image, four-fraction allocation): with two fractions (0.5, 0.9)
the curve between them is too coarse, and the top-1 fell on both nets (ResNet-20 -2.90 ± 1.09
points at ``macs:0.59``, -6.87 ± 1.36 at ``macs:0.45``; ResNet-56 -3.33 ± 0.91, -4.72 ± 1.22).
Fewer images held on ResNet-56 (128: +0.75 ± 0.85, +1.61 ± 0.88) but not on ResNet-20 at
``macs:0.59`` (256: -3.76 ± 0.91; 128: -1.39 ± 0.90), and four disjoint 128-image samples spread
ResNet-20's ``macs:0.45`` top-1 over 74.7-81.9 % against 77.9-79.4 % for three 512-image ones.
The allocation is a noisy estimate even at 512: another 512 images moved ResNet-20's top-1 by
-4.61 ± 1.09 points at ``macs:0.59``.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..criteria._prefix_cache import ChannelMask, PrefixCache
from ..errors import DataError, SpecError
from ..groups import ChannelGroup
from ..modes import modes_kept
from ..plan import PrunePlan, lowest, removal_count
from .refit import ConsumerRefit, DenseTargets

DEFAULT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
DEFAULT_IMAGES = 512  # calibration images (one batch): ±1.3 points of sampling error at 90 %
RECOVERIES = ("none", "lsq")


@dataclass(frozen=True)
class SensitivityPoint:
    """One row of the table: ``group`` alone with ``removed`` channels gone (``fraction`` asked)."""

    group: str
    fraction: float
    removed: int
    size: int
    top1: float  # on the calibration images
    loss: float  # mean cross-entropy on the same images
    macs_saved: int  # dense MACs − MACs kept with only this group pruned
    params_saved: int


@dataclass
class SensitivityTable:
    """Every group's calibration top-1 at each fraction, and what measuring it cost."""

    criterion: str
    recovery: str
    images: int
    dense_top1: float
    dense_loss: float
    points: list[SensitivityPoint] = field(default_factory=list)
    passes: int = 0  # passes of the model over the images (all but the first start at a group)
    seconds: float = 0.0

    def curve(self, group: str) -> list[SensitivityPoint]:
        """The group's points by channels removed, with the dense model as the point at 0."""
        points = sorted((p for p in self.points if p.group == group), key=lambda p: p.removed)
        size = points[0].size if points else 0
        dense = SensitivityPoint(group, 0.0, 0, size, self.dense_top1, self.dense_loss, 0, 0)
        return [dense, *points]

    def rows(self) -> list[dict]:
        """Flat records for sensitivity.csv / sensitivity.json."""
        common = {"criterion": self.criterion, "recovery": self.recovery, "images": self.images,
                  "dense_top1": self.dense_top1}
        return [{**common, **asdict(p)} for p in self.points]


def calibration_batch(
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]], images: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``images`` calibration samples as one batch."""
    if not batches or len(batches[0][0]) == 0:
        raise DataError(
            "the sensitivity analysis needs calibration images with labels, but the data has an "
            "empty calibration split; give the data a calibration split or choose another allocation"
        )
    x = torch.cat([b[0] for b in batches])[:images]
    y = torch.cat([b[1] for b in batches])[:images]
    return x, y


def _top1_and_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    top1 = float((logits.argmax(dim=1) == y).double().mean())
    return top1, float(F.cross_entropy(logits.double(), y))


@contextmanager
def _group_masked(model: nn.Module, group: ChannelGroup, positions: tuple[int, ...], batch: int) -> Iterator[None]:
    """Zero ``positions`` of ``group`` at every producer's output, replayed outputs included."""
    mask = ChannelMask(model, group, [positions], batch)
    try:
        yield
    finally:
        mask.remove()


def analyse(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    cost,  # pipeline.budget.PlanCost (not imported: the pipeline imports this package)
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    images: int = DEFAULT_IMAGES,
    recovery: str = "none",
    criterion: str = "",
    seed: int = 0,
) -> SensitivityTable:
    """The sensitivity table of ``model``: each group alone pruned by ``scores`` at ``fractions``."""
    if recovery not in RECOVERIES:
        raise SpecError(
            f"sensitivity analysis recovery {recovery!r} is not supported; use one of "
            f"{', '.join(RECOVERIES)} (a group's consumers are refit only with lsq)"
        )
    bad = [f for f in fractions if not 0.0 < f < 1.0]
    if bad or not fractions:
        raise SpecError(f"sensitivity fractions must lie in (0, 1), got {list(fractions)}; e.g. 0.25,0.5,0.75")
    start = time.perf_counter()
    x, y = calibration_batch(batches, images)
    dense_kept = cost.kept(PrunePlan({}))
    with modes_kept(model), torch.no_grad():
        model.eval()
        targets = DenseTargets(model, groups, x, seed) if recovery == "lsq" else None
        dense_top1, dense_loss = _top1_and_loss(model(x), y)
        table = SensitivityTable(criterion, recovery, len(x), dense_top1, dense_loss,
                                 passes=1 if targets is None else 2)
        for group in groups:
            counts = sorted({removal_count(group.size, f): f for f in fractions}.items())
            counts = [(c, f) for c, f in counts if c > 0]
            if not counts:
                continue
            cache = PrefixCache(model, [m.module for m in group.producers()], x)
            table.passes += 1
            for count, fraction in counts:
                positions = lowest(scores[group.name], count)
                with ExitStack() as stack:
                    stack.enter_context(_group_masked(model, group, positions, len(x)))
                    if targets is not None:
                        stack.enter_context(ConsumerRefit(model, group, positions, targets).installed())
                    top1, loss = _top1_and_loss(cache.run(x), y)
                table.passes += 1
                kept = cost.kept(PrunePlan({group.name: positions}))
                table.points.append(SensitivityPoint(
                    group.name, fraction, count, group.size, top1, loss,
                    dense_kept[0] - kept[0], dense_kept[1] - kept[1],
                ))
    table.seconds = time.perf_counter() - start
    return table
