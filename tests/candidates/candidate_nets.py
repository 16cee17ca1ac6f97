"""Small networks and file helpers for the candidate tests."""

from __future__ import annotations

import random
import struct
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_prune.groups import ChannelGroup
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups, prune_model


class ResidualNet(nn.Module):
    """conv-bn, a residual block on it, a strided conv, and a linear layer reading the flattened
    map (so that one channel is 16 input positions of ``fc``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.bn3 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)) + x)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(x.flatten(1))


class TinyVGG(nn.Module):
    """A plain VGG-like net (no shortcut) for Torch-Pruning to prune on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm parameters and statistics, so a misplaced channel shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()


def random_plan(groups: Sequence[ChannelGroup], fraction: float, seed: int) -> PrunePlan:
    """Remove ``fraction`` of every group (at least one channel, never all), at random."""
    rng = random.Random(seed)
    counts = {g.name: min(g.size - 1, max(1, round(fraction * g.size))) for g in groups}
    return PrunePlan(
        {g.name: tuple(sorted(rng.sample(range(g.size), counts[g.name]))) for g in groups}
    )


def same_plan(a: PrunePlan, b: PrunePlan) -> bool:
    def norm(p):
        return {k: tuple(sorted(v)) for k, v in p.remove.items() if v}
    return norm(a) == norm(b)


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def rewrite_archive(
    src: Path, dst: Path, edit: Callable[[str, bytes], bytes | None], add=()
) -> Path:
    """Copy a zip archive entry by entry through ``edit(record, data)`` (None drops the entry),
    with valid CRCs: what a deliberate tamperer would write."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        top = zin.namelist()[0].split("/")[0]
        for name in zin.namelist():
            data = edit(name.split("/", 1)[1], zin.read(name))
            if data is not None:
                zout.writestr(name, data)
        for record, data in add:
            zout.writestr(f"{top}/{record}", data)
    return dst


def assert_clean(excinfo: pytest.ExceptionInfo) -> None:
    """The error was raised by our code, not chained to (or raised from inside) torch."""
    exc = excinfo.value
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    frames = traceback.extract_tb(exc.__traceback__)
    assert not any("/torch/" in f.filename for f in frames), [f.filename for f in frames]


@dataclass
class PrunedCase:
    """A dense model, its channel groups, a plan, the model our surgery cut with it, and that
    model saved as a state-dict candidate."""

    dense: nn.Module
    example: torch.Tensor
    groups: list[ChannelGroup]
    plan: PrunePlan
    pruned: nn.Module
    path: Path


def make_case(dense: nn.Module, example: torch.Tensor, folder: Path, seed: int) -> PrunedCase:
    dense = randomise_batchnorm(dense, seed)
    groups = find_channel_groups(dense, example)
    plan = random_plan(groups, 0.4, seed)
    pruned = prune_model(dense, groups, plan, example)
    path = folder / "candidate.pt"
    torch.save(pruned.state_dict(), path)
    return PrunedCase(dense, example, groups, plan, pruned, path)


def flip_byte(src: Path, dst: Path, record: str) -> Path:
    """Copy ``src`` with one byte in the middle of ``record``'s stored bytes inverted, leaving
    the CRC recorded for it as it was: damage, or tampering by someone who did not bother."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as archive:
        info = next(i for i in archive.infolist() if i.filename.split("/", 1)[1] == record)
    local = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[local + 26 : local + 30])
    data[local + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def truncate(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst
