"""``digits``: scikit-learn's bundled 8x8 handwritten digits, enlarged to LeNet-5's 32x32 input.

The 1,797 images ship inside scikit-learn, so this task needs no download and runs in air-gapped CI;
it is the data of the embedded LeNet-5 default. The split is fixed once and for all (stratified
80/20 by a fixed permutation): the seed of a run never moves it, because stored baselines were
measured on exactly these held-out images.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .bundle import DataBundle
from .samples import TensorSamples, calibration_subset, fixed_permutation

# What fixes the data: the embedded model's cache key includes it, so changing any of these
# retrains the embedded default instead of reusing weights trained on another split.
SPLIT_RECIPE = {
    "source": "sklearn.datasets.load_digits",
    "held_out_fraction": 0.2,
    "split_seed": 2020,
    "size": 32,  # pixels per side after resizing
}
DEFAULT_CALIBRATION_SIZE = 256
_PIXEL_MAX = 16.0  # load_digits stores ink as integers 0..16


def digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and held-out samples: per class, a fixed shuffle's first 20 % are held out."""
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        shuffled = members[fixed_permutation(len(members), SPLIT_RECIPE["split_seed"] + int(label))]
        held_out.append(shuffled[: round(len(members) * SPLIT_RECIPE["held_out_fraction"])])
    held_out_indices = np.sort(np.concatenate(held_out))
    train_indices = np.setdiff1d(np.arange(len(labels)), held_out_indices)
    return train_indices, held_out_indices


def exact_mean_std(values: torch.Tensor) -> tuple[float, float]:
    """Mean and (unbiased) standard deviation from exactly rounded sums (:func:`math.fsum`).

    A vectorised float32 reduction sums in an order that depends on the CPU's vector width, so its
    last bits differ between machines; an exactly rounded sum does not.
    """
    flat = values.detach().double().flatten().numpy()
    mean = math.fsum(flat) / flat.size
    return mean, math.sqrt(math.fsum((flat - mean) ** 2) / (flat.size - 1))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 images (8×8, ink 0..16) and labels of ``sklearn.datasets.load_digits``.

    Read from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixels and
    the label per row, which is what ``load_digits`` parses) without importing scikit-learn, whose
    import took 2-5 s of every gate run and of each pytest-xdist worker; the loader itself is the
    fallback should a release move the file. A test keeps the two equal.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        raw = load_digits()
        return raw.images, raw.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_digits_bundle(calibration_size: int | None = None) -> DataBundle:
    """Train (1,437) and held-out (360) digits as normalised 1×32×32 tensors; calibration from train."""
    pixels, target = digits_arrays()
    labels = torch.from_numpy(target.astype(np.int64))
    images = torch.from_numpy(pixels.astype(np.float32) / _PIXEL_MAX).unsqueeze(1)
    size = SPLIT_RECIPE["size"]
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)

    train_indices, held_out_indices = (torch.from_numpy(i) for i in digits_split(target))
    # Statistics of the train split only, so nothing about the held-out images leaks into training;
    # summed exactly, so that they (and the data digest) are the same bits on every CPU.
    mean, std = exact_mean_std(images[train_indices])
    images = (images - mean) / std

    train = TensorSamples(images[train_indices], labels[train_indices])
    evaluation = TensorSamples(images[held_out_indices], labels[held_out_indices])
    return DataBundle(
        name="digits",
        train=train,
        calibration=calibration_subset(train, calibration_size, DEFAULT_CALIBRATION_SIZE, "digits"),
        evaluation=evaluation,
        num_classes=10,
        input_shape=(1, size, size),
    )
