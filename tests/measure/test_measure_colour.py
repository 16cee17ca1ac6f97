"""Colour-selectivity indices: known answers on hand-made first-layer filters."""

import math

import pytest
import torch
from torch import nn

from pytest_prune.errors import DataError, PruneError
from pytest_prune.measure.colour import (
    channel_responses,
    colour_selective_share,
    colour_selectivity,
    greyscale,
    weight_colour_selectivity,
)

CHROMATIC = (1.0, -1.0, 0.0)  # red minus green: zero response to any grey pixel
LUMINANCE = (0.299, 0.587, 0.114)  # answers grey(x) exactly as it answers x
MEAN_GREY = (1 / 3, 1 / 3, 1 / 3)  # grey-only, but not the luminance direction


def first_layer(*colour_weights: tuple[float, float, float]) -> nn.Sequential:
    """A 3×3 conv whose filter ``c`` weighs every tap by ``colour_weights[c]``, then a ReLU."""
    conv = nn.Conv2d(3, len(colour_weights), 3, bias=False)
    with torch.no_grad():
        for c, rgb in enumerate(colour_weights):
            conv.weight[c] = torch.tensor(rgb).view(3, 1, 1).expand(3, 3, 3)
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


@pytest.fixture(scope="module")
def colourful() -> torch.Tensor:
    return torch.rand(40, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_chromatic_filter_scores_one_and_grey_filters_about_zero(colourful):
    model = first_layer(CHROMATIC, LUMINANCE, MEAN_GREY)
    model(colourful[:1])  # materialise the lazy head
    csi = colour_selectivity(model, "1", colourful, top_n=10)
    assert csi[0] == pytest.approx(1.0)
    assert csi[1] == pytest.approx(0.0, abs=1e-5)
    assert csi[2] < 0.1
    assert ((csi >= 0) & (csi <= 1)).all()


def test_weight_based_index_agrees_on_first_layers():
    model = first_layer(CHROMATIC, LUMINANCE, MEAN_GREY)
    csi_w = weight_colour_selectivity(model[0])
    assert csi_w[0] == pytest.approx(1.0)  # mean over RGB is zero: all energy is chromatic
    assert csi_w[2] == pytest.approx(0.0, abs=1e-7)  # all energy along the grey direction
    # The two indices differ on the luminance filter: colour-blind by response (CSI 0), but a
    # quarter of its energy lies off the mean-grey direction: Σ(w − 1/3)² / Σw² = 0.1136 / 0.4470.
    assert csi_w[1] == pytest.approx(0.2542, abs=1e-4)
    assert torch.equal(weight_colour_selectivity(model[0].weight), csi_w)
    assert weight_colour_selectivity(torch.zeros(1, 3, 3, 3)).item() == 0.0


def test_luminance_is_taken_on_raw_pixels_of_normalised_data(colourful):
    mean = torch.tensor([0.8, 0.5, 0.2]).view(3, 1, 1)
    std = torch.tensor([0.3, 0.1, 0.2]).view(3, 1, 1)

    def normalise(x):
        return (x - mean) / std

    def denormalise(x):
        return x * std + mean

    class Denormalise(nn.Module):  # a model trained on normalised data, looking at raw colour
        def forward(self, x):
            return denormalise(x)

    model = nn.Sequential(Denormalise(), first_layer(CHROMATIC))
    images = normalise(colourful)
    right = colour_selectivity(model, "1.1", images, denormalise=denormalise, normalise=normalise)
    naive = colour_selectivity(model, "1.1", images)
    assert right.item() == pytest.approx(1.0)
    assert naive.item() < 0.9  # grey in normalised space is coloured in pixel space


def test_dead_filter_scores_zero_and_pre_activation_outputs_are_rectified(colourful):
    model = first_layer((-1.0, -1.0, -1.0), CHROMATIC)
    assert colour_selectivity(model, "1", colourful)[0] == 0.0
    assert torch.equal(channel_responses(model, "0", colourful), channel_responses(model, "1", colourful))


def test_greyscale_replicates_luminance():
    pixel = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    assert greyscale(pixel).flatten().tolist() == pytest.approx([0.299 + 0.2935] * 3)
    with pytest.raises(DataError, match="RGB"):
        greyscale(torch.zeros(1, 1, 4, 4))
    with pytest.raises(PruneError, match="both denormalise and normalise"):
        greyscale(pixel, denormalise=lambda x: x)


def test_unknown_layer_lists_the_modules(colourful):
    with pytest.raises(PruneError, match="no module 'conv9'.*0, 1"):
        colour_selectivity(first_layer(CHROMATIC), "conv9", colourful)


def test_colour_selective_share_arithmetic():
    csi = torch.tensor([0.9, 0.1, 0.3, 0.25, 0.0, 0.6])
    # selective (> 0.25): positions 0, 2, 5; removed 0, 1, 3 → 1 of 3; kept 2, 4, 5 → 2 of 3
    pruned, kept = colour_selective_share(csi, [3, 0, 1])
    assert (pruned, kept) == pytest.approx((1 / 3, 2 / 3))
    assert colour_selective_share(csi, [0, 1, 3], threshold=0.05) == pytest.approx((1.0, 2 / 3))
    nothing_removed = colour_selective_share(csi, [])
    assert math.isnan(nothing_removed.pruned) and nothing_removed.kept == pytest.approx(0.5)
    with pytest.raises(PruneError, match="do not fit the 6 filters"):
        colour_selective_share(csi, [6])
