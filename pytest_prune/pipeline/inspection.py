"""Post-surgery inspection: what a compressed model kept of the dense one, beyond accuracy and size.

Two looks, each comparing the compressed model with the dense one: do the same pixels matter
(attribution maps), and were the first layer's colour-selective filters among those removed (how much
faster it runs is :func:`pytest_prune.measure.latency.backend_latency`). The values are keyword arguments of :class:`~pytest_prune.pipeline.results.MethodResult`;
:class:`~pytest_prune.pipeline.run.PruneRun` supplies the models, images and settings. Nothing here knows
pytest or baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..candidates import ExportedModel
from ..data.bundle import DataBundle
from ..errors import TraceError
from ..groups import ChannelGroup
from ..measure.attribution import IMAGES_PER_CALL, attribution_retention, last_conv_name
from ..measure.colour import colour_selective_share, colour_selectivity
from ..plan import PrunePlan

# (group of the first conv's filters, module their output is read at, each filter's colour index)
FirstLayerColour = tuple[ChannelGroup, str, torch.Tensor]


def first_layer_colour(
    dense: nn.Module, groups: Sequence[ChannelGroup], data: DataBundle, image_count: int
) -> FirstLayerColour | None:
    """The group holding the first conv's filters, the module whose output they are read at,
    and the dense filters' response-based colour-selectivity index (0 for grey inputs)."""
    first_conv = next((n for n, m in dense.named_modules() if isinstance(m, nn.Conv2d)), None)
    group = next((g for g in groups for m in g.producers() if m.module == first_conv), None)
    if group is None:
        return None
    names = [m.module for m in group.producers()]
    modules = dict(dense.named_modules())
    after = names[names.index(first_conv) + 1] if names.index(first_conv) + 1 < len(names) else None
    layer = after if after and isinstance(modules[after], nn.modules.batchnorm._BatchNorm) else first_conv
    device = modules[first_conv].weight.device  # the images go where the layer reading them is
    images = data.evaluation_images(image_count).to(device)
    if images.shape[1] != 3:
        # grey input: the grey image is the image, so every filter's index is 0 by definition
        return group, layer, torch.zeros(group.size, device=device)
    csi = colour_selectivity(dense, layer, images, denormalise=data.denormalise, normalise=data.normalise)
    return group, layer, csi[list(group.root_indices)]


def attribution_look(
    dense_maps: tuple[torch.Tensor, torch.Tensor],
    compressed: nn.Module,
    images: torch.Tensor,
    method: str,
    normalise: Callable[[torch.Tensor], torch.Tensor] | None,
    dense: nn.Module | None = None,
) -> dict[str, Any]:
    """Do the same pixels matter? ``dense_maps`` is (targets, maps) of the dense model, computed
    once per run (:meth:`~pytest_prune.pipeline.run.PruneRun.dense_attribution`); ``dense`` names Grad-CAM's
    layer for an exported candidate (:func:`gradcam_layer`)."""
    targets, maps = dense_maps
    count, options = len(images), {}
    if method == "gradcam" and isinstance(compressed, ExportedModel):
        if dense is None:
            raise ValueError("Grad-CAM on an exported candidate needs the dense model to name its layer")
        # One forward call per captum call: Grad-CAM reads its layer's output once per call, so
        # the images are cut into batches the program accepts whole, the last padded by repeats.
        size = compressed.spec.call_size(IMAGES_PER_CALL)
        images, targets, maps = (_repeat_last(t, -count % size) for t in (images, targets, maps))
        options = {"layer": gradcam_layer(dense, compressed), "batch_size": size}
    retention = attribution_retention(
        None, compressed, images, method=method, normalise=normalise, targets=targets, dense_maps=maps,
        **options,
    )
    rhos, ious = retention.spearman[:count], retention.topk_iou[:count]  # the padding left out
    return {"attribution_spearman": sum(rhos) / count, "attribution_topk_iou": sum(ious) / count}


def _repeat_last(values: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([values, values[-1:].expand(extra, *values.shape[1:])]) if extra else values


def gradcam_layer(dense: nn.Module, compressed: ExportedModel) -> str:
    """Grad-CAM's layer in an exported candidate: the output of the convolution exported from the
    dense model's last ``Conv2d`` (the layer Grad-CAM explains on the dense model)."""
    name = last_conv_name(dense)
    if name not in compressed.conv_outputs:
        found = ", ".join(compressed.conv_outputs) or "none"
        raise TraceError(
            f"Grad-CAM explains layer {name!r} of the dense model, but the exported candidate "
            f"{compressed.source!r} records no convolution of that name (its convolutions: {found}); "
            "export the candidate from a module that keeps the dense model's layer names, or use "
            "--prune-attribution integrated_gradients"
        )
    return compressed.conv_outputs[name]


def colour_look(
    plan: PrunePlan | None, first_layer: FirstLayerColour | None, colour_threshold: float
) -> dict[str, Any]:
    """Were the first layer's colour-selective filters among those removed? Empty where there is
    no plan (a pure decomposition removes no filters) or no first conv layer."""
    if plan is None or first_layer is None:
        return {}
    group, _, csi = first_layer
    share = colour_selective_share(csi, plan.remove.get(group.name, ()), colour_threshold)
    # no filter removed from the first layer: none of the removed ones is colour-selective
    return {
        "colour_selective_pruned": 0.0 if math.isnan(share.pruned) else share.pruned,
        "colour_selective_kept": share.kept,
        "colour_threshold": colour_threshold,
    }
