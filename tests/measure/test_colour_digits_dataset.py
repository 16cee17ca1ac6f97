"""colour-digits: fixed, seeded, and its colours say nothing of the label."""

import numpy as np
import pytest
import torch

from pytest_prune.data.colour_digits import (
    MIN_LUMINANCE_CONTRAST,
    colour_digit_pixels,
    colour_digits,
    denormalise,
    draw_colours,
    normalise,
)
from pytest_prune.data.digits import digits_split


def stacked(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels)


@pytest.fixture(scope="module")
def bundle():
    return colour_digits(seed=0)


def test_bundle_shape_and_split_are_the_digits_ones(bundle):
    _, labels = colour_digit_pixels(0)
    train_indices, held_out_indices = digits_split(labels.numpy())
    assert bundle.name == "colour-digits" and bundle.num_classes == 10
    assert bundle.input_shape == (3, 32, 32)
    assert (len(bundle.train), len(bundle.evaluation)) == (len(train_indices), len(held_out_indices))
    assert len(bundle.calibration) == 256
    assert bundle.train[0][0].shape == (3, 32, 32)


def test_same_seed_same_data_other_seed_other_colours_same_labels(bundle):
    images, labels = stacked(bundle.evaluation)
    again_images, again_labels = stacked(colour_digits(seed=0).evaluation)
    other_images, other_labels = stacked(colour_digits(seed=1).evaluation)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    assert torch.equal(labels, other_labels)
    assert not torch.allclose(images, other_images)


def test_colours_carry_no_label_information():
    foreground, background = draw_colours(1797, seed=0)
    pixels, labels = colour_digit_pixels(0)
    labels = labels.numpy()
    for colours in (foreground, background, pixels.mean(dim=(2, 3)).numpy()):
        overall = colours.mean(axis=0)
        for digit in range(10):
            # about 180 draws per class: the standard error of a mean colour is about 0.02
            assert np.abs(colours[labels == digit].mean(axis=0) - overall).max() < 0.08


def test_every_digit_stays_visible_in_grey():
    foreground, background = draw_colours(500, seed=3)
    contrast = np.abs((foreground - background) @ np.array([0.299, 0.587, 0.114]))
    assert contrast.min() >= MIN_LUMINANCE_CONTRAST
    assert foreground.min() >= 0 and foreground.max() <= 1


def test_normalisation_round_trips_and_pixels_are_raw_rgb(bundle):
    pixels, _ = colour_digit_pixels(0)
    assert pixels.min() >= 0 and pixels.max() <= 1
    assert torch.allclose(denormalise(normalise(pixels)), pixels, atol=1e-6)
    images, _ = stacked(bundle.train)
    assert images.mean().abs() < 0.1 and 0.8 < images.std() < 1.2
