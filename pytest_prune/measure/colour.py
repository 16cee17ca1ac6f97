"""Colour selectivity of filters: does a criterion remove colour filters first?

Abbasi-Asl & Yu (2017, paper 003 in ``papers.md``) report that most of the filters their CAR criterion
prunes first in AlexNet's conv1/conv2 are colour-selective, judged from filter visualisations. This
module turns that judgement into numbers; both indices are **our reading**, not the paper's:

* **response-based** (after Rafegas, Vanrell et al., "Understanding trained CNNs by indexing neuron
  selectivity", Pattern Recognition Letters 2020), any layer: for channel ``c`` with response
  ``a_c(x)`` = max over space of its post-activation output on image ``x``, take the ``N`` images
  ``x_j`` on which ``a_c`` is largest and

      CSI_c = 1 − Σ_j a_c(grey(x_j)) / Σ_j a_c(x_j),   clamped to [0, 1],

  where ``grey`` replaces each pixel by its luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601)
  on all three channels. 0: the filter answers the grey image as strongly (colour-blind); 1: it
  answers only to colour. A channel that never responds (``Σ_j a_c(x_j) = 0``) scores 0.
* **weight-based**, first layers only (their input is the image): the share of a filter's energy
  outside the grey direction, ``CSI_w = ‖W − mean_rgb(W)‖² / ‖W‖²`` (0 for an all-zero filter).
  A cross-check of the response-based index, which needs no data.

A filter counts as colour-selective when its index is above a threshold, by default
:data:`COLOUR_SELECTIVE_THRESHOLD` = 0.25 (a common choice); every figure and report of shares must
state the threshold it used.

Luminance is a property of raw RGB pixels: on normalised inputs pass ``denormalise`` (model input →
raw pixels) and ``normalise`` (raw pixels → model input) so that the grey image is built in pixel
space and fed to the model the way its training data was. Without them the tensors are taken to be
raw pixels. The weight-based index works on the weights as they are (in the normalised input space).

Measurements only: nothing here imports pytest, the plugin or captum, or knows of baselines.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from ..errors import DataError, PruneError
from ..modes import eval_mode

LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma of R, G, B
COLOUR_SELECTIVE_THRESHOLD = 0.25
DEFAULT_TOP_N = 10

PixelMap = Callable[[torch.Tensor], torch.Tensor]


class ColourSelectiveShare(NamedTuple):
    """Fractions of the removed and of the kept filters whose index is above the threshold."""

    pruned: float
    kept: float


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the layer's output is in hand."""


def greyscale(
    images: torch.Tensor, denormalise: PixelMap | None = None, normalise: PixelMap | None = None
) -> torch.Tensor:
    """``images`` (N×3×H×W) with each pixel replaced by its luminance on all three channels."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise DataError(
            f"colour selectivity needs RGB images N×3×H×W, got shape {tuple(images.shape)}; "
            "use a colour data set such as 'colour-digits' or 'cifar10'"
        )
    if (denormalise is None) != (normalise is None):
        raise PruneError(
            "pass both denormalise and normalise (luminance is taken on raw pixels, then the grey image "
            "is normalised again for the model), or neither for data that is not normalised"
        )
    raw = denormalise(images) if denormalise is not None else images
    weights = torch.tensor(LUMINANCE_WEIGHTS, dtype=raw.dtype, device=raw.device).view(1, 3, 1, 1)
    grey = (raw * weights).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    return normalise(grey) if normalise is not None else grey


@torch.no_grad()
def channel_responses(model: nn.Module, layer_name: str, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``Tensor[N, C]``: each channel's rectified maximum response over space at ``layer_name``.

    The module's *output* is read; pass the module after which the channel is post-activation (the
    ReLU, or the BatchNorm when a functional ReLU follows). Responses are clamped at 0, so a
    pre-activation output counts like the ReLU that follows it. The forward pass stops at the
    layer; the model runs in eval mode and its mode is restored.
    """
    try:
        module = model.get_submodule(layer_name)
    except AttributeError as error:
        names = ", ".join(name for name, _ in model.named_modules() if name)
        raise PruneError(f"model has no module {layer_name!r}; its modules are: {names}") from error
    captured: list[torch.Tensor] = []

    def capture(_module, _inputs, output):
        captured.append(output.detach())
        raise _Captured

    handle = module.register_forward_hook(capture)
    try:
        with eval_mode(model):
            for chunk in images.split(batch_size):
                try:
                    model(chunk)
                except _Captured:
                    pass
    finally:
        handle.remove()
    out = torch.cat(captured)
    peaks = out.flatten(2).amax(dim=2) if out.dim() > 2 else out
    return peaks.clamp(min=0)


def colour_selectivity(
    model: nn.Module,
    layer_name: str,
    images: torch.Tensor,
    top_n: int = DEFAULT_TOP_N,
    denormalise: PixelMap | None = None,
    normalise: PixelMap | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Response-based colour-selectivity index ``Tensor[C]`` in [0, 1] of the channels at ``layer_name``.

    ``top_n`` images per channel (capped at the number of images); ties in response go to the
    earlier image. See the module docstring for the formula and ``denormalise``/``normalise``.
    """
    if top_n < 1:
        raise PruneError(f"top_n={top_n!r} must be at least 1 (the number of top-activating images per filter)")
    grey = greyscale(images, denormalise, normalise)
    colour_response = channel_responses(model, layer_name, images, batch_size).double()
    grey_response = channel_responses(model, layer_name, grey, batch_size).double()
    count = min(top_n, len(images))
    top = torch.argsort(colour_response, dim=0, descending=True, stable=True)[:count]  # count × C
    colour_sum = colour_response.gather(0, top).sum(dim=0)
    grey_sum = grey_response.gather(0, top).sum(dim=0)
    ratio = torch.where(colour_sum > 0, grey_sum / colour_sum.clamp(min=torch.finfo(torch.float64).tiny), 1.0)
    return (1.0 - ratio).clamp(0.0, 1.0).float()


def weight_colour_selectivity(layer: nn.Module | torch.Tensor) -> torch.Tensor:
    """Weight-based index ``‖W − mean_rgb(W)‖² / ‖W‖²`` per output filter of a first layer (C_in = 3)."""
    weight = layer.weight if isinstance(layer, nn.Module) else layer
    weight = weight.detach().double()
    if weight.dim() < 2 or weight.shape[1] != 3:
        raise DataError(
            f"the weight-based colour index needs a first layer reading RGB (weight C_out×3×…), got "
            f"weight shape {tuple(weight.shape)}; use the response-based colour_selectivity for deeper layers"
        )
    chromatic = weight - weight.mean(dim=1, keepdim=True)
    energy = weight.pow(2).flatten(1).sum(dim=1)
    chromatic_energy = chromatic.pow(2).flatten(1).sum(dim=1)
    return torch.where(energy > 0, chromatic_energy / energy.clamp(min=torch.finfo(torch.float64).tiny), 0.0).float()


def colour_selective_share(
    csi: torch.Tensor, removed_idx: Sequence[int], threshold: float = COLOUR_SELECTIVE_THRESHOLD
) -> ColourSelectiveShare:
    """Share of removed and of kept filters with ``csi > threshold``; ``nan`` for an empty side.

    ``removed_idx``: positions (0 .. C−1) of the removed filters, as a :class:`PrunePlan` lists
    them for a group whose channels are the filters of ``csi``.
    """
    size = len(csi)
    removed_set = {int(i) for i in removed_idx}
    removed = sorted(removed_set)
    if removed and not (0 <= removed[0] and removed[-1] < size):
        raise PruneError(f"removed filter positions {removed} do not fit the {size} filters scored")
    selective = (csi.detach().reshape(-1) > threshold).tolist()
    kept = [i for i in range(size) if i not in removed_set]

    def share(positions: list[int]) -> float:
        return sum(selective[i] for i in positions) / len(positions) if positions else float("nan")

    return ColourSelectiveShare(pruned=share(removed), kept=share(kept))
