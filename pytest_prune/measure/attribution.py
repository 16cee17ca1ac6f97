"""Attribution maps of a classifier and how much of the dense model's maps a compressed model keeps.

Zhang, Yang, Sang & Yu (2021, paper 000 in ``papers.md``) claim that attribution pruning keeps "the
attribution characteristics of the original model". :func:`attribution_retention` measures that
claim for any pruned model, whatever the criterion:

* an attribution map per image, ``Tensor[H, W]``, from captum (:func:`attribution_maps`):
  ``integrated_gradients`` (black baseline, ``n_steps`` Gauss-Legendre steps, |attribution| summed
  over colour channels), ``saliency`` (|∂logit/∂x| summed over colour channels) or ``gradcam``
  (Grad-CAM on the last ``Conv2d`` of the model, ReLU-ed and upsampled bilinearly to the input size);
* the class explained is the **dense** model's prediction, for both models, so that the two maps
  answer the same question even where the compressed model changed its mind;
* per image: the Spearman rank correlation of the two maps over pixels (average ranks for ties; a
  constant map correlates 0 with anything) and the IoU of their top-``top_k`` most-attributed pixels.

Everything is deterministic on CPU: no sampling (no noise tunnel, no random baselines), and ties
among equal attributions are broken by pixel position.

This module is the only one of the package that imports captum. It knows nothing of pytest, the
plugin or baselines; the gates compare its numbers with stored ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import nn

from ..errors import DataError, SpecError, TraceError
from ..modes import eval_mode

Method = Literal["integrated_gradients", "saliency", "gradcam"]
METHODS: tuple[str, ...] = ("integrated_gradients", "saliency", "gradcam")
DEFAULT_IG_STEPS = 32  # fixed, so that maps measured in different runs are comparable
DEFAULT_TOP_K = 0.1
IMAGES_PER_CALL = 16  # images attributed per captum call, at most
# Integrated gradients runs the model on n_steps interpolated copies of every image of a call, and
# keeps their gradients: 16 images × 32 steps at 3x224x224 is 300 MB of input alone. Large images
# go in fewer per call, so that the copies stay within this; 32x32 images are not affected.
IG_CALL_BYTES = 64 * 2**20


@dataclass(frozen=True)
class AttributionRetention:
    """How closely a compressed model's attribution maps follow the dense model's.

    ``spearman`` and ``topk_iou`` hold one value per image, in the order of the images given.
    """

    spearman_mean: float
    topk_iou_mean: float
    spearman: list[float] = field(default_factory=list)
    topk_iou: list[float] = field(default_factory=list)
    method: str = "integrated_gradients"
    top_k: float = DEFAULT_TOP_K


def last_conv_name(model: nn.Module) -> str:
    """The qualified name of the last ``nn.Conv2d`` in the model's registration order.

    Registration order is the forward order for sequential stacks and the usual ResNets; a model
    that registers its layers out of order should pass ``layer=`` explicitly.
    """
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not names:
        raise TraceError(
            f"{type(model).__name__} has no nn.Conv2d layer for Grad-CAM; pass layer='<module name>' "
            "or use method='integrated_gradients' or 'saliency'"
        )
    return names[-1]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise SpecError(f"attribution method {method!r} is unknown; choose one of {', '.join(METHODS)}")


def _black_baseline(images: torch.Tensor, normalise: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    # Black is pixel value 0 *before* normalisation: on normalised data the zero tensor is the mean
    # colour, not black. Without ``normalise`` the images are taken to be raw pixels.
    zeros = torch.zeros_like(images)
    return normalise(zeros) if normalise is not None else zeros


def _attribute_batch(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    n_steps: int,
    layer: str | None,
    normalise: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    if method == "integrated_gradients":
        attr = IntegratedGradients(model).attribute(
            images, baselines=_black_baseline(images, normalise), target=targets, n_steps=n_steps
        )
        return attr.abs().sum(dim=1)
    # Saliency and Grad-CAM differentiate with respect to the images themselves; a leaf copy that
    # requires grad leaves the caller's tensor alone (and keeps captum from warning about it).
    images = images.detach().clone().requires_grad_(True)
    if method == "saliency":
        return Saliency(model).attribute(images, target=targets, abs=True).sum(dim=1)
    conv = model.get_submodule(layer or last_conv_name(model))
    cam = LayerGradCam(model, conv).attribute(images, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")[:, 0]


@torch.no_grad()
def predicted_classes(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The model's top-1 class for each image, in eval mode (the model's mode is restored)."""
    with eval_mode(model):
        return torch.cat([model(chunk).argmax(dim=1) for chunk in images.split(batch_size)])


def attribution_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | None = None,
    method: Method = "integrated_gradients",
    *,
    n_steps: int = DEFAULT_IG_STEPS,
    layer: str | None = None,
    normalise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """One non-negative attribution map per image: ``Tensor[N, H, W]`` (detached, on ``images``' device).

    ``targets``: the class explained per image (default: the model's own prediction).
    ``n_steps``: integration steps of integrated gradients. ``layer``: Grad-CAM's module name
    (default: the last ``Conv2d``). ``normalise``: maps raw pixels to the model's input space, so
    that integrated gradients start from a truly black image (default: the zero tensor).
    ``batch_size``: images per captum call (default: IMAGES_PER_CALL, fewer for integrated
    gradients on large images, see IG_CALL_BYTES). The model runs in eval mode; its mode is
    restored afterwards.
    """
    _check_method(method)
    if images.dim() != 4:
        raise SpecError(f"images of shape {tuple(images.shape)} are not a batch N×C×H×W; add a batch dimension")
    if len(images) == 0:
        raise DataError("no images to attribute: pass at least one image (e.g. a few calibration samples)")
    if targets is None:
        targets = predicted_classes(model, images)
    targets = torch.as_tensor(targets, device=images.device).reshape(-1)
    if batch_size is None:
        batch_size = _images_per_call(images, method, n_steps)
    with eval_mode(model):
        maps = [
            _attribute_batch(model, chunk, target_chunk, method, n_steps, layer, normalise).detach()
            for chunk, target_chunk in zip(images.split(batch_size), targets.split(batch_size))
        ]
    return torch.cat(maps)


def _images_per_call(images: torch.Tensor, method: str, n_steps: int) -> int:
    if method != "integrated_gradients":
        return IMAGES_PER_CALL
    interpolated = images[0].numel() * images.element_size() * n_steps
    return max(1, min(IMAGES_PER_CALL, IG_CALL_BYTES // interpolated))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor; tied values share the mean of the ranks they span."""
    sorted_values, order = torch.sort(values, stable=True)
    _, run_of, run_lengths = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    run_ends = torch.cumsum(run_lengths, 0).double()
    run_ranks = run_ends - (run_lengths.double() - 1) / 2
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = run_ranks[run_of]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two maps over their pixels; 0 when either map is constant."""
    ra, rb = _average_ranks(a.reshape(-1)), _average_ranks(b.reshape(-1))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = torch.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denominator == 0:
        return 0.0
    return float((ra * rb).sum() / denominator)


def _top_pixels(values: torch.Tensor, count: int) -> set[int]:
    # A stable descending sort breaks ties by pixel position, so equal maps give equal sets.
    return set(torch.argsort(values.reshape(-1), descending=True, stable=True)[:count].tolist())


def topk_iou(a: torch.Tensor, b: torch.Tensor, top_k: float = DEFAULT_TOP_K) -> float:
    """IoU of the ``top_k`` fraction (at least one pixel) of most-attributed pixels of two maps."""
    if not 0.0 < top_k <= 1.0:
        raise SpecError(f"top_k={top_k!r} must be a fraction of pixels in (0, 1], e.g. 0.1 for the top 10 %")
    count = max(1, round(top_k * a.numel()))
    top_a, top_b = _top_pixels(a, count), _top_pixels(b, count)
    return len(top_a & top_b) / len(top_a | top_b)


def attribution_retention(
    dense: nn.Module | None,
    compressed: nn.Module,
    images: torch.Tensor,
    method: Method = "integrated_gradients",
    top_k: float = DEFAULT_TOP_K,
    *,
    targets: torch.Tensor | None = None,
    dense_maps: torch.Tensor | None = None,
    **kw,
) -> AttributionRetention:
    """Per-image Spearman correlation and top-``top_k`` IoU between dense and compressed maps.

    Both models explain the dense model's predicted class. ``kw`` goes to :func:`attribution_maps`
    (``n_steps``, ``normalise``, ``batch_size``; ``layer`` names the same module in both models,
    which surgery keeps by name). A model compared with itself scores 1.0 on both. ``targets`` and
    ``dense_maps`` may be given instead of ``dense`` (computed once for many compressed models).
    """
    if dense_maps is None or targets is None:
        if dense is None:
            raise ValueError("attribution_retention needs the dense model or its targets and maps")
        targets = predicted_classes(dense, images)
        dense_maps = attribution_maps(dense, images, targets, method, **kw)
    compressed_maps = attribution_maps(compressed, images, targets, method, **kw)
    rhos = [spearman(d, c) for d, c in zip(dense_maps, compressed_maps)]
    ious = [topk_iou(d, c, top_k) for d, c in zip(dense_maps, compressed_maps)]
    return AttributionRetention(
        spearman_mean=sum(rhos) / len(rhos) if rhos else 0.0,
        topk_iou_mean=sum(ious) / len(ious) if ious else 0.0,
        spearman=rhos,
        topk_iou=ious,
        method=method,
        top_k=top_k,
    )
