"""Small dense models, hand-pruned copies of them, and tiny data bundles for the recovery tests.

Pruning here is plain tensor indexing (keep some output channels of a producer, the matching
BatchNorm entries and the matching input channels of the consumer), so that these tests do not
depend on the surgery module; ``test_recovery_surgery.py`` repeats the main checks on its output.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pytest_prune.data.bundle import DataBundle
from pytest_prune.groups import ChannelGroup, GroupMember
from pytest_prune.plan import PrunePlan


class TinyConvNet(nn.Module):
    """conv(3→8) → BN → ReLU → conv(8→8) → BN → ReLU → dropout → pool → linear(8→4)."""

    def __init__(self, width: int = 8, classes: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(self.drop(x).mean(dim=(2, 3)))


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


def tiny_conv_net(seed: int = 0) -> TinyConvNet:
    torch.manual_seed(seed)
    return randomise_bn(TinyConvNet(), seed).eval()


def keep_outputs(module: nn.Module, keep: Sequence[int]) -> None:
    """Slice a conv/linear/BatchNorm down to the output channels ``keep``, in place."""
    index = torch.as_tensor(list(keep), dtype=torch.long)
    with torch.no_grad():
        for name in ("weight", "bias"):
            p = getattr(module, name, None)
            if p is not None:
                setattr(module, name, nn.Parameter(p.index_select(0, index).clone()))
        for name in ("running_mean", "running_var"):
            if getattr(module, name, None) is not None:
                setattr(module, name, getattr(module, name).index_select(0, index).clone())
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(module, attr):
            setattr(module, attr, len(keep))


def keep_inputs(module: nn.Module, keep: Sequence[int]) -> None:
    """Slice a (non-grouped) conv or linear layer down to the input channels ``keep``, in place."""
    index = torch.as_tensor(list(keep), dtype=torch.long)
    module.weight = nn.Parameter(module.weight.detach().index_select(1, index).clone())
    for attr in ("in_channels", "in_features"):
        if hasattr(module, attr):
            setattr(module, attr, len(keep))


def hand_prune(model: nn.Module, chains: dict[tuple[str, ...], Sequence[int]]) -> nn.Module:
    """A pruned copy: for each (producer, [batchnorm,] consumer) chain, keep those channels."""
    pruned = copy.deepcopy(model)
    for chain, keep in chains.items():
        *producers, consumer = chain
        for name in producers:
            keep_outputs(pruned.get_submodule(name), keep)
        keep_inputs(pruned.get_submodule(consumer), keep)
    return pruned


def hand_groups(
    chains: dict[tuple[str, ...], Sequence[int]], sizes: dict[tuple[str, ...], int]
) -> tuple[list[ChannelGroup], PrunePlan]:
    """The channel groups and plan that describe :func:`hand_prune`'s pruning."""
    groups, remove = [], {}
    for chain, keep in chains.items():
        *producers, consumer = chain
        size = sizes[chain]
        per_channel = tuple((c,) for c in range(size))
        members = tuple(GroupMember(p, "producer", per_channel) for p in producers)
        members += (GroupMember(consumer, "consumer", per_channel),)
        name = f"{producers[0]}.out"
        groups.append(ChannelGroup(name, producers[0], tuple(range(size)), members))
        remove[name] = tuple(c for c in range(size) if c not in set(keep))
    return groups, PrunePlan(remove)


def tiny_bundle(
    shape: tuple[int, ...] = (3, 8, 8),
    train: int = 256,
    calibration: int = 300,
    classes: int = 4,
    seed: int = 0,
    labeller: nn.Module | None = None,
) -> DataBundle:
    """Random images; labels from ``labeller``'s argmax (a learnable task) or random."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> TensorDataset:
        x = torch.randn((n,) + shape, generator=g)
        if labeller is not None:
            with torch.no_grad():
                y = labeller.eval()(x).argmax(dim=1)
        else:
            y = torch.randint(0, classes, (n,), generator=g)
        return TensorDataset(x, y)

    input_shape = shape if len(shape) == 3 else (1, 1, shape[0])
    return DataBundle("tiny", split(train), split(calibration), split(64), classes, input_shape)  # type: ignore[arg-type]


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def modes_of(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    assert not different, f"changed: {different}"
