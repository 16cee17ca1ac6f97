"""Concatenations Torch-Pruning maps wrongly or not at all: with the model input, before a flatten."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from surgery_cases import TOLERANCE
from torch import nn

from pytest_prune.equivalence import check_pruned_sizes, max_abs_difference
from pytest_prune.errors import TraceError
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups, prune_model


class InputConcat(nn.Module):
    """cat([x, conv(x)]): 3 input channels, then 2 conv channels (optionally pooled first)."""

    def __init__(self, pool: bool = False):
        super().__init__()
        self.pool = pool
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.mix = nn.Conv2d(5, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        if self.pool:
            x = F.max_pool2d(x, 2)
        return self.head(self.mix(torch.cat([x, self.conv(x)], 1)).mean((2, 3)))


class ConcatThenFlatten(nn.Module):
    """cat → pool → flatten → linear: Torch-Pruning's width check walks through the flatten."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.BatchNorm2d(3)
        self.c = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(10 * 2 * 2, 2)

    def forward(self, x):
        joined = torch.cat([self.a(x), self.c(F.relu(self.b(x)))], 1)
        return self.head(F.adaptive_avg_pool2d(joined, 2).flatten(1))


class SignalConcat(nn.Module):
    """A Conv1d model: Torch-Pruning turns concat offsets off for 3-D inputs (a ViT workaround)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(2, 4, 3, padding=1)
        self.b = nn.Conv1d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm1d(7)
        self.c = nn.Conv1d(7, 5, 1)
        self.head = nn.Linear(5 * 8, 2)

    def forward(self, x):
        joined = F.relu(self.bn(torch.cat([self.b(x), self.a(x)], 1)))
        return self.head(self.c(joined).flatten(1))


class ConcatWithConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("bias_map", torch.zeros(1, 1, 6, 6))
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        y = self.conv(x)
        joined = torch.cat([y, self.bias_map.expand(y.shape[0], -1, -1, -1)], 1)
        return self.head(joined.mean((2, 3)))


def _seeded(factory):
    with torch.random.fork_rng():  # seeded weights without touching the global generator
        torch.manual_seed(0)
        return factory()


def _assert_exact_for_random_plans(model, groups, x, trials=6):
    rng = random.Random(0)
    for _ in range(trials):
        plan = PrunePlan(
            {g.name: tuple(sorted(rng.sample(range(g.size), rng.randrange(g.size)))) for g in groups}
        )
        pruned = prune_model(model, groups, plan, x)
        assert max_abs_difference(model, pruned, groups, plan, x) <= TOLERANCE, plan
        assert check_pruned_sizes(model, pruned, groups, plan).ok, plan


@pytest.mark.parametrize("pool", [False, True], ids=["raw", "pooled"])
def test_concat_with_the_model_input_offsets_the_conv_channels(pool):
    model, x = _seeded(lambda: InputConcat(pool)), torch.randn(2, 3, 8, 8)
    groups = {g.name: g for g in find_channel_groups(model, x)}
    assert sorted(groups) == ["conv", "mix"]  # the input's own 3 channels are never a group
    (mix,) = groups["conv"].consumers()
    assert mix.module == "mix" and mix.indices == ((3,), (4,))
    _assert_exact_for_random_plans(model, list(groups.values()), x)


def test_concat_before_a_flatten_keeps_each_input_at_its_offset():
    model, x = _seeded(ConcatThenFlatten), torch.randn(2, 3, 8, 8)
    groups = {g.name: g for g in find_channel_groups(model, x)}
    assert sorted(groups) == ["a", "c"]
    assert [m.module for m in groups["a"].members] == ["a", "head"]  # not tied to 'c'
    (head,) = groups["c"].consumers()
    assert head.indices[0] == (16, 17, 18, 19)  # channel 4 of the concat, 2x2 positions each
    _assert_exact_for_random_plans(model, list(groups.values()), x)


def test_concat_of_one_dimensional_signals_keeps_its_offsets():
    model, x = _seeded(SignalConcat), torch.randn(2, 2, 8)
    with torch.no_grad():
        model.bn.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    groups = {g.name: g for g in find_channel_groups(model, x)}
    assert sorted(groups) == ["a", "b", "c"]
    assert [(m.module, m.indices[0]) for m in groups["a"].members] == [
        ("a", (0,)),
        ("bn", (3,)),
        ("c", (3,)),
    ]
    _assert_exact_for_random_plans(model, list(groups.values()), x)


def test_concat_with_an_untraced_tensor_raises_trace_error():
    model, x = ConcatWithConstant(), torch.randn(2, 3, 6, 6)
    with pytest.raises(TraceError, match="'conv'.*buffer or a constant.*ignore=\\['conv'\\]"):
        find_channel_groups(model, x)
    assert find_channel_groups(model, x, ignore=["conv"]) == []
