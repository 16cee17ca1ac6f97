"""``synthetic:CxHxW:K``: seeded Gaussian noise with random labels, for models that have no real data.

It exercises the whole pipeline (shapes, surgery, MACs, latency, data-driven criteria) on models
such as torchvision's, whose real data a test machine does not have. Accuracy on it is meaningless:
the labels are random, so any model scores about 1/K and accuracy gates say nothing.

Samples are generated when indexed, each from its own seed, so a 3x224x224 task holds no images in
memory and every sample is the same whatever order it is read in.
"""

from __future__ import annotations

import hashlib
import re

import torch
from torch.utils.data import Dataset

from ..errors import SpecError
from .bundle import DataBundle
from .samples import calibration_subset

TRAIN_SIZE = 128
EVALUATION_SIZE = 64
DEFAULT_CALIBRATION_SIZE = 64  # drawn from the train split, like every other source's calibration
_SPEC = re.compile(r"(\d+)x(\d+)x(\d+):(\d+)")


class SeededNoise(Dataset):
    """``count`` samples of standard normal noise shaped ``shape`` with labels uniform in 0..K-1."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, count: int, seed: int, split: str):
        self.shape = shape
        self.num_classes = num_classes
        self.count = count
        self.seed = seed
        self.split = split  # train and evaluation draw from different seeds

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.count:
            raise IndexError(f"sample {index} of {self.count}")
        key = f"{self.seed}/{self.split}/{index}".encode()
        generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        image = torch.randn(self.shape, generator=generator)
        label = int(torch.randint(self.num_classes, (), generator=generator))
        return image, label


def parse_synthetic(shape_and_classes: str) -> tuple[tuple[int, int, int], int]:
    """``"3x224x224:1000"`` → ``((3, 224, 224), 1000)``."""
    match = _SPEC.fullmatch(shape_and_classes.strip())
    sizes = [int(group) for group in match.groups()] if match else []
    if not sizes or 0 in sizes:
        raise SpecError(
            f"data spec 'synthetic:{shape_and_classes}' is not of the form synthetic:CxHxW:K with "
            "positive whole numbers; write for example synthetic:3x224x224:1000"
        )
    channels, height, width, num_classes = sizes
    return (channels, height, width), num_classes


def synthetic_bundle(shape_and_classes: str, *, seed: int = 0, calibration_size: int | None = None) -> DataBundle:
    """128 train, 64 evaluation and (by default) 64 calibration samples of noise; ``seed`` picks the draw."""
    shape, num_classes = parse_synthetic(shape_and_classes)
    name = f"synthetic:{shape_and_classes.strip()}"
    train = SeededNoise(shape, num_classes, TRAIN_SIZE, seed, "train")
    return DataBundle(
        name=name,
        train=train,
        calibration=calibration_subset(train, calibration_size, DEFAULT_CALIBRATION_SIZE, name),
        evaluation=SeededNoise(shape, num_classes, EVALUATION_SIZE, seed, "evaluation"),
        num_classes=num_classes,
        input_shape=shape,
    )
