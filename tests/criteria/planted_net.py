"""A small CNN with planted channels, and the task it is trained on, for the criteria tests.

The task: 12x12 colour images whose class is a *luminance* pattern (horizontal stripes, vertical
stripes, or both), with a random colour field of zero luminance on top (colour carries nothing
about the label). ``TinyNet``'s first layer has 12 channels; three are planted and kept so during
training (re-imposed after every optimiser step):

* ``DEAD`` (9): filter, bias, BatchNorm scale and shift and its consumers' weights all zero — a
  channel training has killed (with weight decay, the consumers of a dead channel get no gradient
  and decay to zero too);
* ``COLOUR`` (10): a frozen chromatic filter, R − G uniformly over the kernel: zero grey
  component, so it sees only the colour field;
* ``TWIN`` (11): an exact copy of channel ``ORIGINAL`` (0) — filter, bias, BatchNorm — whose
  consumers' weights are zero. Its activations equal channel 0's and it contributes nothing: a
  truly redundant duplicate. (A duplicate sharing the consumer weights with its original is not
  removable without rescaling the original's consumers, which no criterion here does.)

Channels 0–8 are ordinary ("free") channels.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from pytest_prune.criteria import ScoringContext
from pytest_prune.groups import ChannelGroup

SIZE, CLASSES, WIDTH1, WIDTH2 = 12, 3, 12, 8
ORIGINAL, DEAD, COLOUR, TWIN = 0, 9, 10, 11
FREE = list(range(9))


class TinyNet(nn.Module):
    """conv(3→12)→BN→ReLU→maxpool→conv(12→8)→BN→ReLU→global average→linear(8→3)."""

    def __init__(self, width1: int = WIDTH1, width2: int = WIDTH2, classes: int = CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width1, width2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width2)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(width2, classes)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


def stripes_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images and labels; the label is the luminance pattern, the colour is noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(CLASSES, (n,), generator=gen)
    coord = torch.arange(SIZE, dtype=torch.float32)
    period = torch.randint(3, 6, (n, 1), generator=gen).float()
    phase = torch.rand(n, 1, generator=gen) * 6.0
    rows = torch.cos(2 * math.pi * (coord + phase) / period)  # (n, SIZE)
    cols = torch.cos(2 * math.pi * (coord + phase.flip(0)) / period)
    horizontal = rows[:, :, None].expand(n, SIZE, SIZE)
    vertical = cols[:, None, :].expand(n, SIZE, SIZE)
    lum = torch.where((y == 0)[:, None, None], horizontal, torch.where((y == 1)[:, None, None], vertical, horizontal * vertical))
    lum = lum + 0.3 * torch.randn(n, SIZE, SIZE, generator=gen)
    tint = torch.randn(n, 3, generator=gen)
    tint = tint - tint.mean(dim=1, keepdim=True)  # zero luminance: R + G + B = 0
    blob = nn.functional.interpolate(torch.rand(n, 1, 3, 3, generator=gen), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = lum[:, None] + 1.5 * tint[:, :, None, None] * blob
    return x, y


def colour_filter() -> torch.Tensor:
    w = torch.zeros(3, 3, 3)
    w[0], w[1] = 0.5, -0.5  # R − G: zero grey component
    return w


@torch.no_grad()
def impose_plants(model: TinyNet) -> None:
    c1, b1, c2 = model.conv1, model.bn1, model.conv2
    for p in (c1.weight[DEAD], c1.bias[DEAD:DEAD + 1], b1.weight[DEAD:DEAD + 1], b1.bias[DEAD:DEAD + 1], c2.weight[:, DEAD]):
        p.zero_()
    c1.weight[COLOUR] = colour_filter()
    c1.bias[COLOUR] = 0.0
    c1.weight[TWIN] = c1.weight[ORIGINAL]
    c1.bias[TWIN] = c1.bias[ORIGINAL]
    b1.weight[TWIN] = b1.weight[ORIGINAL]
    b1.bias[TWIN] = b1.bias[ORIGINAL]
    b1.running_mean[TWIN] = b1.running_mean[ORIGINAL]
    b1.running_var[TWIN] = b1.running_var[ORIGINAL]
    c2.weight[:, TWIN] = 0.0


def accuracy(model: nn.Module, batches) -> float:
    model.eval()
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return right / sum(len(y) for _, y in batches)


def tiny_groups(model: TinyNet) -> list[ChannelGroup]:
    """The two groups of TinyNet, found by the surgery module."""
    from pytest_prune.surgery import find_channel_groups

    return find_channel_groups(model, torch.zeros(2, 3, SIZE, SIZE))


@dataclass
class Trained:
    model: TinyNet
    groups: list[ChannelGroup]
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # calibration: 256 samples, batches of 64

    def context(self, seed: int = 0, model: nn.Module | None = None) -> ScoringContext:
        return ScoringContext(model if model is not None else self.model, self.groups, self.batches, seed=seed)

    def copy(self) -> "Trained":
        return Trained(copy.deepcopy(self.model), self.groups, self.batches)


def train_planted(epochs: int = 5) -> Trained:
    """TinyNet trained on the stripes task, the plants re-imposed after every optimiser step."""
    torch.manual_seed(0)
    model = TinyNet()
    x, y = stripes_task(1024, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    impose_plants(model)
    gen = torch.Generator().manual_seed(2)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = order[i : i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            impose_plants(model)
    model.eval()
    cx, cy = stripes_task(256, seed=3)
    batches = [(cx[i : i + 64], cy[i : i + 64]) for i in range(0, 256, 64)]
    trained = Trained(model, tiny_groups(model), batches)
    assert accuracy(model, batches) > 0.9, "the tiny task should be learnt; the known answers assume it"
    return trained
