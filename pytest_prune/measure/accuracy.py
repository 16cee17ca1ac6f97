"""Top-1 accuracy and mean loss of classifiers over a dataset or loader: several models in one pass,
so that data streamed from a user's loader is read once for all of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..modes import eval_mode


EVALUATION_BATCH_SIZE = 256  # batch composition can move a logit's last bit: one size everywhere


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


def evaluate(
    model: nn.Module,
    data: Dataset | Iterable,
    device: torch.device | str = "cpu",
    batch_size: int = EVALUATION_BATCH_SIZE,
) -> Accuracy:
    """Accuracy in eval mode; the model's mode is restored afterwards."""
    return evaluate_together([model], data, device, batch_size)[0]


@torch.no_grad()
def evaluate_together(
    models: Sequence[nn.Module],
    data: Dataset | Iterable,
    device: torch.device | str = "cpu",
    batch_size: int = EVALUATION_BATCH_SIZE,
) -> list[Accuracy]:
    """Each model's accuracy, in eval mode, from one pass over ``data``; modes are restored afterwards."""
    correct, loss_sums, total = [0] * len(models), [0.0] * len(models), 0
    with eval_mode(*models):
        for x, y in batches_of(data, batch_size):
            x, y = x.to(device), y.to(device)
            for index, model in enumerate(models):
                logits = model(x)
                correct[index] += int((logits.argmax(1) == y).sum())
                loss_sums[index] += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            total += len(y)
    if total == 0:
        return [Accuracy(0.0, 0.0, 0) for _ in models]
    return [Accuracy(hits / total, loss / total, total) for hits, loss in zip(correct, loss_sums)]
