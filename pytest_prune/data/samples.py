"""Building blocks every data source shares: in-memory samples, the fixed calibration subset, and
the first samples of a split (in memory or streamed)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import DataError
from .loader_split import LoaderSplit

# The calibration subset must not move when --prune-seed changes: data-driven criteria, BN
# recalibration and stored baselines all depend on which samples it holds.
CALIBRATION_PERMUTATION_SEED = 1234


class TensorSamples(Dataset):
    """(image, label) pairs held as two tensors: images N×C×H×W float32, labels N int64.

    Labels come out as Python ints, the form every split of a :class:`DataBundle` yields.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def fixed_permutation(count: int, seed: int) -> np.ndarray:
    """A permutation of ``range(count)`` that is the same on every machine and NumPy version.

    ``RandomState`` is NumPy's frozen legacy stream; ``default_rng`` may change between releases.
    """
    return np.random.RandomState(seed).permutation(count)


def calibration_subset(train: Dataset, requested: int | None, default: int, source: str) -> Subset:
    """The first ``requested`` (else ``default``, capped at the split) samples of a fixed shuffle of ``train``.

    Smaller sizes are prefixes of larger ones, so a calibration set only ever grows by adding samples.
    """
    available = len(train)
    if requested is None:
        size = min(default, available)
    elif isinstance(requested, bool) or not isinstance(requested, int) or not 1 <= requested <= available:
        raise DataError(
            f"calibration_size={requested!r} does not fit data {source!r}: it must be a whole number "
            f"from 1 to the {available} samples of its train split; ask for fewer calibration samples"
        )
    else:
        size = requested
    order = fixed_permutation(available, CALIBRATION_PERMUTATION_SEED)[:size]
    return Subset(train, order.tolist())


def first_samples(dataset: Dataset, count: int) -> Dataset:
    """The first ``count`` samples of a split (all of it, if it holds fewer), read lazily: a
    streamed split is cut as it streams, never read to learn its length."""
    if isinstance(dataset, LoaderSplit):
        return dataset.first(count)
    return dataset if count >= len(dataset) else Subset(dataset, range(count))
