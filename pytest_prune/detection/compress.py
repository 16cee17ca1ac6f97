"""Gong et al. (2020) on object detectors: statistics pruning, then Tucker-2, on a torchvision detector.

The paper compresses Faster R-CNN: low-dimensional conv layers are pruned by the mean and variance
of their filters, high-dimensional conv layers are decomposed into three cascaded convs (see
``/work/shared/papers.md``, "001"). :func:`compress_detector` does this on a torchvision
``GeneralizedRCNN`` (``fasterrcnn_mobilenet_v3_large_320_fpn``, ``fasterrcnn_resnet50_fpn``, …):

    one detector forward on an example image  → the tensors reaching the parts we can trace
    parts (backbone body, box head + predictor) → channel groups (surgery, Torch-Pruning)
      → groups not taken by Tucker-2           → meanvar natural plan (2-means per layer) → pruned part
    whole detector                             → Tucker-2 on every high-dimensional k×k conv
                                                  (backbone, FPN, RPN head, conv box heads)

A detector as a whole cannot be traced by the surgery module: it takes a list of images, resizes
them, generates anchors, runs NMS and returns a list of dicts. Its parts with a tensor input and
tensor outputs can: pruning only channels *inside* a part (never those tied to the part's outputs)
leaves every interface between parts as it was, so the detector runs unchanged around them. Tucker-2
replaces one conv by a cascade with the same input and output channels, so it needs no tracing and
is applied to the whole detector. torchvision detectors also accept an ``N×C×H×W`` tensor (they
iterate over its first dimension), which is how :func:`compress_detector` and :func:`detector_macs`
feed them to the model-wide helpers that take one tensor.

:func:`~pytest_prune.detection.evaluation.detection_map` (in :mod:`.evaluation`) measures the
mean average precision of a detector on the user's data with
``torchmetrics.detection.MeanAveragePrecision``; torchmetrics (and a COCO evaluation backend:
``faster-coco-eval`` or ``pycocotools``) is imported only there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ..criteria import ScoringContext
from ..criteria.statistics import MeanVariance
from ..decompose import (
    HIGH_DIMENSIONAL_WEIGHTS,
    DecompositionReport,
    decompose_model,
    is_high_dimensional,
)
from ..errors import SpecError, TraceError
from ..groups import ChannelGroup
from ..modes import eval_mode
from ..pipeline.methods import low_dimensional_groups
from ..surgery import find_channel_groups, prune_model

PruneScope = Literal["undecomposed", "low-dimensional", "none"]
PRUNE_SCOPES: tuple[str, ...] = ("undecomposed", "low-dimensional", "none")

# ---------------------------------------------------------------------------------------------
# The parts of a detector that the surgery module can trace: a tensor in, tensors out.


class _BoxHeadAndPredictor(nn.Module):
    """``roi_heads.box_head`` followed by ``roi_heads.box_predictor``, as one traceable module.

    Traced together so that the hidden units between them (``fc6`` → ``fc7`` → the class and box
    layers of a ``TwoMLPHead``) are inside the part; the predictor's outputs are the part's outputs
    and are never pruned.
    """

    def __init__(self, head: nn.Module, predictor: nn.Module):
        super().__init__()
        self.head = head
        self.predictor = predictor

    def forward(self, features: torch.Tensor):
        return self.predictor(self.head(features))


@dataclass
class _Part:
    """A traceable part of a detector: where its input is captured and how a pruned copy goes back."""

    name: str
    module: nn.Module
    capture_at: nn.Module  # the detector module whose first positional input is the part's input
    install: Callable[[nn.Module], None]
    example: torch.Tensor | None = None


def _parts(detector: nn.Module) -> tuple[list[_Part], list[str]]:
    """The parts of ``detector`` we know how to feed a tensor, and notes on those it lacks."""
    parts, notes = [], []
    body = getattr(getattr(detector, "backbone", None), "body", None)
    if isinstance(body, nn.Module):
        backbone = detector.backbone
        parts.append(_Part("backbone.body", body, body, lambda new: setattr(backbone, "body", new)))
    else:
        notes.append("no backbone.body: the backbone is not pruned (Tucker-2 still applies)")
    roi_heads = getattr(detector, "roi_heads", None)
    head = getattr(roi_heads, "box_head", None)
    predictor = getattr(roi_heads, "box_predictor", None)
    if isinstance(head, nn.Module) and isinstance(predictor, nn.Module):

        def install(new: nn.Module, roi_heads=roi_heads) -> None:
            roi_heads.box_head, roi_heads.box_predictor = new.head, new.predictor

        parts.append(_Part("roi_heads.box_head+box_predictor", _BoxHeadAndPredictor(head, predictor), head, install))
    else:
        notes.append("no roi_heads.box_head/box_predictor: the box head is not pruned")
    return parts, notes


def _capture_inputs(detector: nn.Module, parts: list[_Part], batch: torch.Tensor) -> None:
    """One forward of ``detector`` on ``batch``; each part keeps (up to two samples of) its input."""

    def keep(part: _Part):
        def hook(_module, inputs):
            if part.example is None and inputs and isinstance(inputs[0], torch.Tensor):
                part.example = inputs[0][:2].detach().clone()

        return hook

    handles = [part.capture_at.register_forward_pre_hook(keep(part)) for part in parts]
    try:
        with torch.no_grad(), eval_mode(detector):
            detector(batch)
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------------------------
# Which channel groups statistics pruning takes.


def _taken_by_tucker(module: nn.Module, threshold: int) -> bool:
    """Whether Tucker-2 is offered this layer: a k×k ``nn.Conv2d`` (k > 1), groups == 1, high-dimensional.

    The same eligibility :func:`~pytest_prune.decompose.decompose_model` applies (it may still keep
    such a conv when its cascade would not be smaller).
    """
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and tuple(module.kernel_size) != (1, 1)
        and is_high_dimensional(module, threshold)
    )


def _selected_groups(
    part: nn.Module, groups: Sequence[ChannelGroup], scope: PruneScope, threshold: int
) -> list[ChannelGroup]:
    if scope == "low-dimensional":
        return low_dimensional_groups(part, groups, threshold)
    if scope == "undecomposed":
        modules = dict(part.named_modules())
        return [g for g in groups if not _taken_by_tucker(modules[g.root], threshold)]
    return []


# ---------------------------------------------------------------------------------------------
# The report.


@dataclass(frozen=True)
class PartPruning:
    """Statistics pruning of one part: its traced groups, those selected, and the channels removed."""

    name: str
    groups_found: int
    groups_selected: int
    channels_selected: int  # channels of the selected groups, before pruning
    channels_removed: int
    note: str = ""  # why nothing was pruned, when nothing was


@dataclass
class DetectorCompression:
    """What :func:`compress_detector` did: per part pruning, then the Tucker-2 report."""

    prune: str
    parts: list[PartPruning]
    decomposition: DecompositionReport
    notes: list[str] = field(default_factory=list)

    @property
    def channels_removed(self) -> int:
        return sum(p.channels_removed for p in self.parts)

    def summary(self) -> str:
        lines = [f"statistics pruning (meanvar natural plan) of the {self.prune} groups:"]
        for p in self.parts:
            what = (
                f"{p.groups_selected}/{p.groups_found} groups selected, "
                f"{p.channels_removed}/{p.channels_selected} of their channels removed"
            )
            lines.append(f"  {p.name}: {what}" + (f" — {p.note}" if p.note else ""))
        lines += [f"  {note}" for note in self.notes]
        d = self.decomposition
        lines.append(
            f"Tucker-2: {len(d.decomposed)} convs decomposed, {len(d.by_decision('kept'))} kept, "
            f"{len(d.by_decision('skipped'))} skipped (ranks by {d.rule}"
            + (f" {d.value}" if d.value is not None else "")
            + ")"
        )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The pipeline.


def _rank_rule(ranks: str | float) -> tuple[str, float | None]:
    if isinstance(ranks, (int, float)) and not isinstance(ranks, bool):
        return "fraction", float(ranks)
    if isinstance(ranks, str):
        return ranks, None
    raise SpecError(f"ranks={ranks!r}: give 'vbmf', 'energy', 'fraction' or a rank fraction such as 0.5")


def _thaw(module: nn.Module) -> list[str]:
    """Replace each ``FrozenBatchNorm2d`` of ``module`` by the ``nn.BatchNorm2d`` that computes the
    same in eval mode; return their names.

    torchvision builds detectors with ``FrozenBatchNorm2d`` whenever weights are loaded. Torch-Pruning
    has no pruner for it and does not say so: it cuts the conv before it and leaves the frozen
    statistics at full size, and the pruned body fails at its first forward. An eval-mode
    ``BatchNorm2d`` (affine weights and running statistics copied, weights frozen) it does prune.
    """
    names = [name for name, m in module.named_modules() if isinstance(m, FrozenBatchNorm2d)]
    for name in names:
        frozen = module.get_submodule(name)
        norm = nn.BatchNorm2d(frozen.weight.numel(), eps=frozen.eps).eval()
        with torch.no_grad():
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(norm, key).copy_(getattr(frozen, key))
        norm.requires_grad_(False)
        module.set_submodule(name, norm)
    return names


def _refreeze(module: nn.Module, names: list[str]) -> None:
    """Put back, at ``names``, ``FrozenBatchNorm2d`` layers holding the (pruned) statistics there."""
    for name in names:
        norm = module.get_submodule(name)
        frozen = FrozenBatchNorm2d(norm.num_features, eps=norm.eps)
        with torch.no_grad():
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(norm, key))
        module.set_submodule(name, frozen)


def _prune_part(part: _Part, scope: PruneScope, threshold: int, seed: int) -> PartPruning:
    """Prune the selected groups of ``part`` in place of the detector copy; say what was done."""
    if part.example is None:
        return PartPruning(part.name, 0, 0, 0, 0, "not reached by the forward pass on the example image")
    frozen = _thaw(part.module)
    try:
        try:
            groups = find_channel_groups(part.module, part.example)
        except TraceError as exc:
            return PartPruning(part.name, 0, 0, 0, 0, f"not traced: {exc}")
        selected = _selected_groups(part.module, groups, scope, threshold)
        channels = sum(g.size for g in selected)
        if not selected:
            note = "no prunable groups" if not groups else f"no group is {scope}"
            return PartPruning(part.name, len(groups), 0, 0, 0, note)
        plan = MeanVariance().natural_plan(ScoringContext(model=part.module, groups=selected, seed=seed))
        pruned = prune_model(part.module, selected, plan, part.example)
    finally:
        _refreeze(part.module, frozen)
    _refreeze(pruned, frozen)
    part.install(pruned)
    return PartPruning(part.name, len(groups), len(selected), channels, plan.count())


def compress_detector(
    model: nn.Module,
    *,
    ranks: str | float = "vbmf",
    threshold: int = HIGH_DIMENSIONAL_WEIGHTS,
    prune: PruneScope = "undecomposed",
    example_image: torch.Tensor | None = None,
    seed: int = 0,
) -> tuple[nn.Module, DetectorCompression]:
    """A compressed deep copy of a torchvision detector, and what was done to it.

    1. **Statistics pruning** (:class:`~pytest_prune.criteria.statistics.MeanVariance`'s natural
       plan: each group loses the weak cluster of the 2-means on its filters' (mean, variance)) of
       the channel groups inside the backbone body and inside the box head + predictor, each traced
       as a standalone module on the input it receives in one detector forward on ``example_image``.
       ``prune`` picks the groups:

       * ``'undecomposed'`` (default): every group whose root layer Tucker-2 is not offered — 1×1
         and depthwise convs, convs under ``threshold`` weights, fully connected layers. The
         paper's split gives each layer one treatment; in detectors the 1×1 convs (ResNet
         bottlenecks, MobileNet expansions) and the box head's ``fc6`` (12.8 M weights, two thirds
         of ``fasterrcnn_mobilenet_v3_large_320_fpn``) are neither low-dimensional nor
         decomposable, and would otherwise be left as they are;
       * ``'low-dimensional'``: only groups rooted at a conv under ``threshold`` weights — the rule
         of ``meanvar+tucker`` for classifiers (:func:`pytest_prune.pipeline.methods.low_dimensional_groups`);
         it prunes a few early MobileNet layers and nothing of ResNet-50;
       * ``'none'``: Tucker-2 alone.

    2. **Tucker-2** (:func:`~pytest_prune.decompose.decompose_model`) of every k×k conv with at
       least ``threshold`` weights in the whole detector (backbone, FPN, RPN head), when the cascade
       is smaller in parameters and MACs. ``ranks``: ``'vbmf'`` (default, the paper's lineage),
       ``'energy'`` (0.9 of the squared singular values), or a number: the fraction of each mode's
       rank kept. VBMF separates signal from noise: on *random* weights it finds no signal and
       gives ranks near (1, 1), which would destroy a trained layer — use a fraction there.

    ``model`` is not changed. ``example_image`` (C×H×W, default a seeded uniform 3×320×320 image)
    only fixes the spatial sizes that MACs are counted at and the tensors the parts are traced on.
    Pruned channels are not recovered: fine-tune the result on detection data, as the paper does.
    """
    if prune not in PRUNE_SCOPES:
        raise SpecError(f"prune={prune!r}: choose one of {', '.join(PRUNE_SCOPES)}")
    rule, value = _rank_rule(ranks)
    if example_image is None:
        example_image = torch.rand(3, 320, 320, generator=torch.Generator().manual_seed(seed))
    if example_image.dim() != 3:
        raise SpecError(
            f"example_image has shape {tuple(example_image.shape)}; give one C×H×W image tensor"
        )
    batch = example_image.unsqueeze(0)
    compressed = copy.deepcopy(model)
    parts, notes = _parts(compressed)
    if prune == "none":
        parts = []
    if parts:
        _capture_inputs(compressed, parts, batch)
    pruning = [_prune_part(part, prune, threshold, seed) for part in parts]
    compressed, decomposition = decompose_model(compressed, batch, ranks=rule, value=value, threshold=threshold)
    return compressed, DetectorCompression(prune, pruning, decomposition, notes)
