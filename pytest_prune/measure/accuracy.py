"""Top-1 accuracy and mean loss of a classifier over a dataset or loader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@dataclass(frozen=True)
class Accuracy:
    top1: float  # fraction in [0, 1]
    loss: float  # mean cross-entropy
    samples: int


def batches_of(data: Dataset | Iterable, batch_size: int) -> Iterable:
    """(inputs, labels) batches of a Dataset (in order) or of an iterable of batches as it is."""
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    return data


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | Iterable,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> Accuracy:
    """Accuracy in eval mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    try:
        for x, y in batches_of(data, batch_size):
            x, y = x.to(device), y.to(device)
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        return Accuracy(0.0, 0.0, 0)
    return Accuracy(correct / total, loss_sum / total, total)
