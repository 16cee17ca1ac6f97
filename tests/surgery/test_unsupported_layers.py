"""Layers holding per-channel state that Torch-Pruning cannot prune are refused, or kept whole.

Torch-Pruning prunes the tensors of the layer types it has pruners for, and parameters it sees in
autograd. A layer of any other type that holds one value per channel (torchvision's
``FrozenBatchNorm2d``, whose statistics are buffers; a learnable channel scale) would keep its old
width while the conv before it shrinks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from surgery_cases import TOLERANCE, random_plan
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from pytest_prune.equivalence import check_pruned_sizes, max_abs_difference
from pytest_prune.errors import TraceError
from pytest_prune.surgery import find_channel_groups, prune_model


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every float tensor random: scales and variances in [0.5, 1.5], the rest in [-0.5, 0.5].

    Fresh normalisation layers (scale 1, shift 0, mean 0, variance 1) would hide a channel whose
    shift leaked into the pruned model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            positive = name.endswith(("running_var", "scale", "std")) or (
                name.endswith("weight") and tensor.dim() == 1
            )
            low = 0.5 if positive else -0.5
            tensor.copy_(torch.rand(tensor.shape, generator=g) + low)
    return model.eval()


class ConvNormNet(nn.Module):
    """conv → norm → relu → conv → pool → linear, with the norm layer given."""

    def __init__(self, norm: type[nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = norm(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = self.conv2(F.relu(self.bn(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def _example() -> torch.Tensor:
    return torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(1))


def _assert_exact(model: nn.Module, groups, x: torch.Tensor, seeds=range(3)) -> None:
    for seed in seeds:
        plan = random_plan(groups, 0.4, seed)
        pruned = prune_model(model, groups, plan, x)
        assert max_abs_difference(model, pruned, groups, plan, x) <= TOLERANCE, plan
        assert check_pruned_sizes(model, pruned, groups, plan).ok, plan


def test_frozen_batchnorm_is_refused_with_the_fix():
    model = _randomise(ConvNormNet(FrozenBatchNorm2d))
    with pytest.raises(TraceError) as info:
        find_channel_groups(model, _example())
    message = str(info.value)
    for words in (
        "'bn' (FrozenBatchNorm2d)",
        "no pruner",
        "buffer 'running_var' (8,)",
        "old width",
        "nn.BatchNorm2d in eval mode",
        "ignore=['bn']",
    ):
        assert words in message
    # ignoring the conv before it is not enough: the FrozenBatchNorm2d itself is named
    with pytest.raises(TraceError, match=r"'bn' \(FrozenBatchNorm2d\)"):
        find_channel_groups(model, _example(), ignore=["conv1"])


def test_ignored_frozen_batchnorm_keeps_every_channel_it_touches():
    model, x = _randomise(ConvNormNet(FrozenBatchNorm2d)), _example()
    groups = find_channel_groups(model, x, ignore=["bn"])
    assert [g.name for g in groups] == ["conv2"]  # conv1's channels run through the frozen norm
    _assert_exact(model, groups, x)
    pruned = prune_model(model, groups, random_plan(groups, 0.5, seed=0), x)
    assert pruned.conv1.out_channels == 8 and pruned.bn.running_var.shape == (8,)


def test_the_suggested_swap_computes_the_same_and_prunes_exactly():
    frozen, x = _randomise(ConvNormNet(FrozenBatchNorm2d)), _example()
    swapped = ConvNormNet(nn.BatchNorm2d).eval()
    swapped.load_state_dict(frozen.state_dict())  # same keys: weight, bias and statistics
    with torch.no_grad():
        assert torch.allclose(swapped(x), frozen(x), atol=1e-6)
    groups = find_channel_groups(swapped, x)
    assert [g.name for g in groups] == ["conv1", "conv2"]
    assert ("bn", "producer") in {(m.module, m.role) for m in groups[0].members}
    _assert_exact(swapped, groups, x)


class ChannelScale(nn.Module):
    """A learnable (or fixed, as a buffer) scale per channel: ``x * scale``."""

    def __init__(self, shape: tuple[int, ...], as_buffer: bool = False, trainable: bool = True):
        super().__init__()
        scale = torch.ones(shape)
        if as_buffer:
            self.register_buffer("scale", scale)
        else:
            self.scale = nn.Parameter(scale, requires_grad=trainable)

    def forward(self, x):
        return x * self.scale


class ScaledNet(nn.Module):
    def __init__(self, scale: nn.Module):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = scale
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = self.conv2(F.relu(self.scale(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


@pytest.mark.parametrize(
    "shape",
    [(8, 1, 1), (1, 8, 1, 1), (8, 8, 8)],
    ids=["C11", "1C11", "CHW"],  # Torch-Pruning cuts the last dimension > 1: right, right, wrong
)
def test_a_learnable_channel_scale_is_refused_by_name(shape):
    model, x = _randomise(ScaledNet(ChannelScale(shape))), _example()
    with pytest.raises(TraceError) as info:
        find_channel_groups(model, x)
    message = str(info.value)
    assert f"parameter 'scale.scale' of shape {shape}" in message
    assert "ignore=['conv1']" in message
    groups = find_channel_groups(model, x, ignore=["conv1"])
    assert [g.name for g in groups] == ["conv2"]
    _assert_exact(model, groups, x)


def test_a_channel_scale_buffer_is_refused_and_can_be_kept_whole():
    model, x = _randomise(ScaledNet(ChannelScale((8, 1, 1), as_buffer=True))), _example()
    with pytest.raises(TraceError) as info:
        find_channel_groups(model, x)
    message = str(info.value)
    for words in ("'scale' (ChannelScale)", "buffer 'scale' (8, 1, 1)", "standard torch.nn layer"):
        assert words in message
    groups = find_channel_groups(model, x, ignore=["scale"])
    assert [g.name for g in groups] == ["conv2"]
    _assert_exact(model, groups, x)


def test_a_frozen_channel_scale_is_refused():
    """A parameter that does not require grad is invisible to the tracer, like a buffer."""
    model = _randomise(ScaledNet(ChannelScale((8, 1, 1), trainable=False)))
    with pytest.raises(TraceError, match=r"'scale' \(ChannelScale\).*do not require grad"):
        find_channel_groups(model, _example())


class MaskedBlock(nn.Module):
    """A container whose own forward uses a per-channel buffer between its children."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.register_buffer("mask", torch.ones(1, 8, 1, 1))

    def forward(self, x):
        return F.relu(self.conv(x) * self.mask)


class BlockNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = MaskedBlock()
        self.head = nn.Conv2d(8, 5, 1)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        y = self.head(self.block(F.relu(self.stem(x))))
        return self.fc(y.mean((2, 3)))


def test_an_ignored_container_keeps_the_channels_its_state_meets():
    model, x = _randomise(BlockNet()), _example()
    with pytest.raises(TraceError, match=r"'block' \(MaskedBlock\).*buffer 'mask' \(1, 8, 1, 1\)"):
        find_channel_groups(model, x)
    groups = find_channel_groups(model, x, ignore=["block"])
    # the stem's channels enter the block and block.conv's channels meet the mask: both kept
    assert [g.name for g in groups] == ["head"]
    _assert_exact(model, groups, x)


class Temperature(nn.Module):
    """State that is not per channel: one scalar, and a count."""

    def __init__(self):
        super().__init__()
        self.register_buffer("t", torch.tensor(2.0))
        self.register_buffer("calls", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        return x / self.t


def test_state_that_is_not_per_channel_is_fine():
    model, x = _randomise(ScaledNet(Temperature())), _example()
    groups = find_channel_groups(model, x)
    assert [g.name for g in groups] == ["conv1", "conv2"]
    _assert_exact(model, groups, x)


class ConstantShift(nn.Module):
    """Returns its buffer: nothing it runs depends on the input, so no traced node is its own."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.zeros(8, 1, 1))

    def forward(self, x):
        return self.shift


class ShiftedNet(ScaledNet):
    def forward(self, x):
        y = self.conv1(x)
        y = self.conv2(F.relu(y + self.scale(y)))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def test_ignoring_a_layer_whose_result_ignores_its_input_is_refused():
    model, x = _randomise(ShiftedNet(ConstantShift())), _example()
    with pytest.raises(TraceError, match=r"'scale' \(ConstantShift\).*buffer 'shift'"):
        find_channel_groups(model, x)
    with pytest.raises(TraceError, match=r"'scale' \(ConstantShift\) is named in ignore.*input"):
        find_channel_groups(model, x, ignore=["scale"])


class Normalise(nn.Module):
    """Input normalisation held as buffers: its 3 channels are the model input's, never pruned."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.3, 0.25]).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class NormalisedNet(ConvNormNet):
    def __init__(self):
        super().__init__(nn.BatchNorm2d)
        self.normalise = Normalise()

    def forward(self, x):
        return super().forward(self.normalise(x))


def test_input_normalisation_buffers_pass_unignored():
    """One mean per colour is not per-channel state of a prunable layer: the input is never pruned."""
    model, x = _randomise(NormalisedNet()), _example()
    groups = find_channel_groups(model, x)
    assert [g.name for g in groups] == ["conv1", "conv2"]
    _assert_exact(model, groups, x)


class IndexTable(nn.Module):
    """A layer with an integer buffer as long as a channel count (Swin V2's
    relative_position_index): an index table, not one value per channel."""

    def __init__(self, length: int):
        super().__init__()
        self.register_buffer("index", torch.arange(length))

    def forward(self, x):
        return x * 2


def test_an_integer_buffer_is_not_per_channel_state():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), IndexTable(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(2, 3, 6, 6)
    groups = find_channel_groups(_randomise(model), x)  # refused before: "holds per-channel state"
    assert {g.name for g in groups} == {"0", "3"}
    plan = random_plan(groups, 0.3, seed=1)
    pruned = prune_model(model, groups, plan, x)
    assert max_abs_difference(model, pruned, groups, plan, x) <= TOLERANCE
    assert check_pruned_sizes(model, pruned, groups, plan).ok
