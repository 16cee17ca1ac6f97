"""``colour-digits``: scikit-learn's digits painted in random colours that say nothing of the label.

Every digit is drawn with its own foreground (ink) and background colour, both uniform in RGB
[0, 1]³ and drawn from a seeded stream by sample position, never by label: colour carries no label
information, and the digit's shape alone decides the class. Pairs whose luminance differs by less
than :data:`MIN_LUMINANCE_CONTRAST` are redrawn, so that the shape stays visible in the grey image
too (the rule looks at colours only, so it leaves colour independent of the label).

This is the data on which colour selectivity (:mod:`pytest_prune.measure.colour`) means something
small enough for CI: a network that learns colour filters here learns them for nothing, and a
criterion that removes them first (as Abbasi-Asl & Yu report of CAR) loses little accuracy.

* images: 3×32×32, the 8×8 digits enlarged bilinearly (as in ``digits``), ink = interpolated
  coverage, pixel = coverage · foreground + (1 − coverage) · background;
* split: exactly the ``digits`` split (:func:`pytest_prune.data.digits.digits_split`); ``seed``
  changes the colours only, never which images are held out;
* normalisation: fixed per-channel :data:`MEAN` and :data:`STD` (not the statistics of a seed's
  draw), so the model's input space is the same for every seed; :func:`normalise` and
  :func:`denormalise` convert, e.g. for ``colour_selectivity(..., denormalise=denormalise,
  normalise=normalise)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .bundle import DataBundle
from .digits import SPLIT_RECIPE, digits_arrays, digits_split
from .samples import TensorSamples, calibration_subset

NAME = "colour-digits"
MIN_LUMINANCE_CONTRAST = 0.3
MEAN = (0.5, 0.5, 0.5)  # the expectation of a uniform colour; fixed by design, see the module docstring
STD = (0.26, 0.26, 0.26)  # close to the pixel spread of seed 0 (0.25 to 0.26 per channel)
DEFAULT_CALIBRATION_SIZE = 256
_LUMINANCE = np.array([0.299, 0.587, 0.114])
_INK_MAX = 16.0  # load_digits stores ink as integers 0..16


def _channel_view(values: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(3, 1, 1)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """Raw RGB in [0, 1] (…×3×H×W) → model input."""
    return (pixels - _channel_view(MEAN, pixels)) / _channel_view(STD, pixels)


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Model input (…×3×H×W) → raw RGB in [0, 1]."""
    return images * _channel_view(STD, images) + _channel_view(MEAN, images)


def draw_colours(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background colours (``count``×3 each) of samples 0 .. count−1 for ``seed``.

    Sample ``i`` draws until its pair has enough luminance contrast; the stream is NumPy's frozen
    ``RandomState``, so the colours are the same on every machine.
    """
    stream = np.random.RandomState(seed)
    foreground, background = np.empty((count, 3)), np.empty((count, 3))
    for i in range(count):
        while True:
            fg, bg = stream.uniform(0.0, 1.0, 3), stream.uniform(0.0, 1.0, 3)
            if abs(float(_LUMINANCE @ (fg - bg))) >= MIN_LUMINANCE_CONTRAST:
                break
        foreground[i], background[i] = fg, bg
    return foreground, background


def colour_digit_pixels(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as raw RGB pixels (N×3×32×32 in [0, 1]) and their labels, in sklearn's order."""
    images, target = digits_arrays()
    coverage = torch.from_numpy(images.astype(np.float32) / _INK_MAX).unsqueeze(1)
    size = SPLIT_RECIPE["size"]
    coverage = F.interpolate(coverage, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    foreground, background = (
        torch.from_numpy(c.astype(np.float32)).view(-1, 3, 1, 1) for c in draw_colours(len(target), seed)
    )
    pixels = coverage * foreground + (1.0 - coverage) * background
    return pixels, torch.from_numpy(target.astype(np.int64))


def colour_digits(seed: int = 0, calibration_size: int | None = None) -> DataBundle:
    """Train (1,438) and held-out (359) colour digits, normalised 3×32×32; calibration from train."""
    pixels, labels = colour_digit_pixels(seed)
    images = normalise(pixels)
    train_indices, held_out_indices = (torch.from_numpy(i) for i in digits_split(labels.numpy()))
    train = TensorSamples(images[train_indices], labels[train_indices])
    return DataBundle(
        name=NAME,
        train=train,
        calibration=calibration_subset(train, calibration_size, DEFAULT_CALIBRATION_SIZE, NAME),
        evaluation=TensorSamples(images[held_out_indices], labels[held_out_indices]),
        num_classes=10,
        input_shape=(3, SPLIT_RECIPE["size"], SPLIT_RECIPE["size"]),
        pixel_mean=MEAN,
        pixel_std=STD,
    )
