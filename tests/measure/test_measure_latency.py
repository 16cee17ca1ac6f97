"""Latency: positive, summarised robustly, interleaved; only a gross cost difference is asserted."""

import pytest
import torch
from torch import nn

from pytest_prune.errors import PruneError
from pytest_prune.measure.latency import latency, speedup


def conv(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(channels, channels, 3, padding=1)


def test_latency_is_positive_and_restores_mode_and_threads():
    model = conv(4).train()
    threads = torch.get_num_threads()
    result = latency(model, torch.rand(1, 4, 16, 16), repeats=7, warmup=1)
    assert result.median_ms > 0 and result.iqr_ms >= 0
    assert len(result.samples) == 7 and result.threads == 1
    assert min(result.samples) <= result.median_ms <= max(result.samples)
    assert model.training and torch.get_num_threads() == threads


class FirstChannels(nn.Module):
    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def forward(self, x):
        return x[:, : self.count]  # a view: costs nothing next to a conv


def test_a_64x_heavier_conv_is_slower_in_the_same_run():
    # 64→64 vs 8→8 channels at the same size: 64x the MACs. Asserting only the order of the two
    # (not a timing threshold) keeps this robust on a busy machine.
    heavy, tiny = conv(64), nn.Sequential(FirstChannels(8), conv(8))
    result = speedup(heavy, tiny, torch.rand(1, 64, 32, 32), repeats=15, warmup=2)
    assert result.dense.median_ms > result.pruned.median_ms
    assert result.speedup == pytest.approx(result.dense.median_ms / result.pruned.median_ms)
    assert len(result.dense.samples) == len(result.pruned.samples) == 15


def test_bad_settings_are_named():
    with pytest.raises(PruneError, match="repeats=0"):
        latency(conv(2), torch.rand(1, 2, 4, 4), repeats=0)
