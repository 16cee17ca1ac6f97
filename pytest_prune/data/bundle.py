"""The data a run works on: train, calibration and evaluation splits of one task."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from .loader_split import LoaderSplit, RebatchedStream


@dataclass
class DataBundle:
    """Three splits of (image, label) samples, images as float CHW tensors already normalised.

    * ``train``: what recovery (fine-tuning) and the embedded default's training use;
    * ``calibration``: a small, fixed subset of training data for data-driven criteria, BatchNorm
      recalibration and least-squares reconstruction;
    * ``evaluation``: held-out data on which top-1 accuracy is measured.

    A split is a map-style ``Dataset``, or a :class:`~pytest_prune.data.loader_split.LoaderSplit`
    streaming a user's DataLoader; :meth:`loader` batches either.
    """

    name: str
    train: Dataset
    calibration: Dataset
    evaluation: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]
    # per-channel mean and std the raw [0, 1] pixels were normalised with, where known: colour
    # measurements need raw pixels (luminance is a property of raw RGB)
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None

    def denormalise(self, images: torch.Tensor) -> torch.Tensor:
        if self.pixel_mean is None or self.pixel_std is None:
            return images
        mean = torch.tensor(self.pixel_mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.pixel_std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        return images * std + mean

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.pixel_mean is None or self.pixel_std is None:
            return pixels
        mean = torch.tensor(self.pixel_mean, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(self.pixel_std, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        return (pixels - mean) / std

    def evaluation_images(self, count: int) -> torch.Tensor:
        """The first ``count`` evaluation images as one tensor."""
        return next(iter(self.loader("evaluation", batch_size=count)))[0]

    def loader(
        self, split: str, batch_size: int = 256, shuffle: bool = False, seed: int = 0
    ) -> DataLoader | RebatchedStream:
        """(images, labels) batches of ``split``, in order or shuffled from ``seed``, read anew on
        every pass; ``len`` counts them. A streamed split keeps its loader's order (a new, seeded one
        each pass if that loader shuffles: see :mod:`~pytest_prune.data.loader_split`)."""
        dataset = {"train": self.train, "calibration": self.calibration, "evaluation": self.evaluation}[split]
        if isinstance(dataset, LoaderSplit):
            return (dataset.shuffled(seed) if shuffle else dataset).batches(batch_size)
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)

    def calibration_batches(
        self, count: int | None = None, batch_size: int = 64, device: torch.device | str = "cpu"
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``count`` calibration samples (all by default) as batches on ``device``."""
        batches, seen = [], 0
        for x, y in self.loader("calibration", batch_size):
            if count is not None and seen >= count:
                break
            if count is not None and seen + len(x) > count:
                x, y = x[: count - seen], y[: count - seen]
            batches.append((x.to(device), y.to(device)))
            seen += len(x)
        return batches
