"""Splits, channel shuffles, unflattening views and transposed convolutions: pruned exactly, or
their channels kept with a note where no exact pruning exists."""

from __future__ import annotations

import pytest
import torch
from surgery_cases import TOLERANCE, give_batchnorm_statistics, keep_one_plan, random_plan
from torch import nn

from pytest_prune.equivalence import check_pruned_sizes, max_abs_difference
from pytest_prune.errors import TraceError
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups, prune_model


class SplitToConcatAndResidual(nn.Module):
    """stem → chunk(2): one half into a residual add, the other through a conv; cat → head."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.f, self.g = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 6, 1)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        a, b = self.bn(self.stem(x)).relu().chunk(2, 1)
        return self.head(torch.cat([a + self.f(a), self.g(b)], 1).mean((2, 3)))


class UnequalSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.f, self.g = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 2, 1), nn.Conv2d(5, 2, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        a, b = self.stem(x).split([3, 5], 1)
        return self.head(torch.cat([self.f(a), self.g(b)], 1).mean((2, 3)))


class ChannelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.inner, self.c = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 1), nn.Conv2d(8, 6, 1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = self.inner(self.stem(x).relu())
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        return self.head(self.c(x).mean((2, 3)))


class Decoder(nn.Module):
    """encoder conv → linear → view → transposed convs (+ BatchNorm) → conv → pooled head."""

    def __init__(self):
        super().__init__()
        self.enc, self.fc = nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.Linear(6 * 4 * 4, 8 * 2 * 2)
        self.up1, self.bn1 = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1), nn.BatchNorm2d(6)
        self.up2 = nn.ConvTranspose2d(6, 5, 4, stride=2, padding=1, bias=False)
        self.bn2, self.out, self.head = nn.BatchNorm2d(5), nn.Conv2d(5, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        x = self.fc(self.enc(x).relu().flatten(1)).relu().view(-1, 8, 2, 2)
        x = self.bn2(self.up2(self.bn1(self.up1(x)).relu())).relu()
        return self.head(self.out(x).mean((2, 3)))


class SharedBlock(nn.Module):
    """One conv run on both halves of the stem's output; both results concatenated."""

    def __init__(self):
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, 1)
        return self.head(torch.cat([self.block(a), self.block(b)], 1).mean((2, 3)))


class SharedOnTwoProducers(nn.Module):
    """One conv → BatchNorm → ReLU block applied to two different layers' outputs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.shared = nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU())
        self.post, self.head = nn.Conv2d(5, 6, 1), nn.Linear(11, 3)

    def forward(self, x):
        u, v = self.shared(self.a(x).relu()), self.shared(self.b(x).relu())
        return self.head(torch.cat([self.post(u), v], 1).mean((2, 3)))


class SharedResidualBlock(nn.Module):
    """One residual block applied twice in a row (weights tied across depth)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(6, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 1))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.stem(x).relu()
        h = h + self.block(h)
        return self.head((h + self.block(h)).mean((2, 3)))


class SharedHead(nn.Module):
    """One linear head reading two branches' pooled features; the two logits added."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.a(x).mean((2, 3))) + self.head(self.b(x).amax((2, 3)))


class SelfFed(nn.Module):
    """A conv run on its own output: its output channels are its input channels, the model input's."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.conv(self.conv(x).relu()).mean((2, 3)))


def _case(cls):
    torch.manual_seed(0)
    model = cls()
    give_batchnorm_statistics(model, (3, 8, 8))
    return model, torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _groups(model, x):
    notes: list[str] = []
    return {g.name: g for g in find_channel_groups(model, x, notes=notes)}, notes


def _assert_exact(model, x, groups, plan):
    pruned = prune_model(model, groups, plan, x)
    assert max_abs_difference(model, pruned, groups, plan, x) <= TOLERANCE
    sizes = check_pruned_sizes(model, pruned, groups, plan)
    assert sizes.ok and sizes.pruned_parameters < sizes.dense_parameters, str(sizes)


@pytest.mark.parametrize("cls", [SplitToConcatAndResidual, UnequalSplit, ChannelShuffle, Decoder])
def test_every_plan_shape_is_exact(cls):
    model, x = _case(cls)
    groups, _ = _groups(model, x)
    for plan in (random_plan(list(groups.values()), 0.3, seed=1), keep_one_plan(list(groups.values()), seed=2)):
        _assert_exact(model, x, list(groups.values()), plan)


def test_an_equal_split_bundles_the_same_offset_of_both_halves():
    model, x = _case(SplitToConcatAndResidual)
    groups, notes = _groups(model, x)
    stem = {m.module: m.indices for m in groups["stem"].members}
    assert stem["stem"] == ((0, 4), (1, 5), (2, 6), (3, 7))  # one from each half
    assert stem["f"] == ((0,), (1,), (2,), (3,))  # the half that feeds the residual add
    assert stem["g"] == ((0,), (1,), (2,), (3,))  # the half that feeds the conv
    assert stem["head"] == ((0,), (1,), (2,), (3,))  # through the add, into the concat
    assert notes == []
    for position in range(4):  # each bundle alone
        _assert_exact(model, x, list(groups.values()), PrunePlan({"stem": (position,)}))


def test_an_unequal_split_keeps_the_channels_it_cuts_with_a_note():
    model, x = _case(UnequalSplit)
    groups, notes = _groups(model, x)
    assert "stem" not in groups and {"f", "g"} <= set(groups)
    assert any("unequal sizes" in note for note in notes)


def test_a_channel_shuffle_keeps_the_channels_it_regroups_and_prunes_the_rest():
    model, x = _case(ChannelShuffle)
    groups, notes = _groups(model, x)
    assert set(groups) == {"stem", "c"}  # inner's channels go through the shuffle
    assert any("channel shuffle" in note for note in notes)


def test_transposed_convolutions_prune_and_a_fixed_view_keeps_its_linear():
    model, x = _case(Decoder)
    groups, notes = _groups(model, x)
    assert set(groups) == {"enc", "up1", "up2", "out"}  # fc feeds view(-1, 8, 2, 2): kept
    assert any("fixed in forward" in note for note in notes)
    up1 = {(m.module, m.role): m.indices for m in groups["up1"].members}
    assert set(up1) == {("up1", "producer"), ("bn1", "producer"), ("up2", "consumer")}
    plan = PrunePlan({"up1": (0, 2), "up2": (4,)})
    pruned = prune_model(model, list(groups.values()), plan, x)
    assert pruned.up1.weight.shape == (8, 4, 4, 4) and pruned.up2.weight.shape == (4, 4, 4, 4)
    _assert_exact(model, x, list(groups.values()), plan)


SHARED = [SharedBlock, SharedOnTwoProducers, SharedResidualBlock, SharedHead]


@pytest.mark.parametrize("cls", SHARED)
def test_a_module_run_twice_prunes_exactly_with_a_note(cls):
    model, x = _case(cls)
    groups, notes = _groups(model, x)
    assert any("run more than once per forward pass" in note for note in notes)
    for plan in (random_plan(list(groups.values()), 0.4, seed=3), keep_one_plan(list(groups.values()), seed=4)):
        _assert_exact(model, x, list(groups.values()), plan)


def test_a_module_run_twice_ties_what_both_uses_read_and_write():
    model, x = _case(SharedBlock)
    groups, _ = _groups(model, x)
    stem = {m.module: m.indices for m in groups["stem"].members}
    assert stem == {"stem": ((0, 2), (1, 3)), "block": ((0,), (1,))}  # channel p of both halves
    block = {m.module: m.indices for m in groups["block"].members}
    assert block == {"block": ((0,), (1,)), "head": ((0, 2), (1, 3))}  # both outputs, side by side
    pruned = prune_model(model, list(groups.values()), PrunePlan({"stem": (1,), "block": (0,)}), x)
    assert pruned.stem.out_channels == 2 and pruned.block.weight.shape == (1, 1, 3, 3)
    assert pruned.head.in_features == 2


def test_two_layers_read_by_one_shared_block_are_one_group():
    model, x = _case(SharedOnTwoProducers)
    groups, _ = _groups(model, x)
    assert {m.module for m in groups["a"].members} == {"a", "b", "shared.0"}


def test_a_module_fed_its_own_output_keeps_channels_tied_to_the_model_input():
    model, x = _case(SelfFed)
    groups, _ = _groups(model, x)
    assert "conv" not in groups  # its outputs are its inputs: the image's three channels


