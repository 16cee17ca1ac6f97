"""Checks of the ``(x, y)`` batches a user gives: one clear DataError, naming the batch, per mistake.

Shared by in-memory pairs (checked once) and streamed loaders (every batch, as it streams: the
checks read a few attributes and take one min over the labels, nothing that costs per pixel).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError


def checked_pair(pair: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``pair`` as (float images N×C×H×W, long labels N), or a DataError saying what is wrong."""
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise DataError(f"{where} is {describe(pair)}; expected an (x, y) pair of tensors")
    images, labels = pair
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise DataError(
            f"{where}: x is {describe(images)}; expected a float tensor N×C×H×W, normalised the way "
            "the model expects (for uint8 images: x.float() / 255, then normalise)"
        )
    if images.dim() != 4 or len(images) == 0:
        raise DataError(
            f"{where}: x has shape {tuple(images.shape)}; expected N×C×H×W with N ≥ 1 (for grey "
            "images without a channel axis use x.unsqueeze(1); for one image, x.unsqueeze(0))"
        )
    integer = isinstance(labels, torch.Tensor) and not (
        labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool
    )
    if not integer:
        raise DataError(
            f"{where}: y is {describe(labels)}; expected integer class indices (torch.long); "
            "convert with y.long(), or y.argmax(1) for one-hot labels"
        )
    if labels.shape != (len(images),):
        raise DataError(
            f"{where}: y has shape {tuple(labels.shape)} for {len(images)} images; expected one class "
            f"index per image, shape ({len(images)},)"
        )
    if int(labels.min()) < 0:
        raise DataError(f"{where}: y holds negative labels (down to {int(labels.min())}); classes count from 0")
    return images.float(), labels.long()


def describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
