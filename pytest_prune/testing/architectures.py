"""Random CNNs as printable descriptions, and the models they describe.

:class:`Architecture` is a small description (input shape, feature blocks, head, weight seed);
:func:`build` gives its ``nn.Module`` with random weights and BatchNorm statistics, the same ones
for the same description. The hypothesis strategies that draw descriptions are in
:mod:`pytest_prune.testing.strategies`; the oracle that follows their channels is in
:mod:`pytest_prune.testing.oracle`.

Models stay tiny (≤ 16 channels, ≤ 16x16 inputs, batch 2) so that hundreds run in seconds. Every
activation used maps zero to zero, which is what makes a pruned model equal to the masked dense one
(:mod:`pytest_prune.masking`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Union

import torch
from torch import nn

MAX_CHANNELS = 16
MAX_SIZE = 16
BATCH = 2

Activation = Literal["none", "relu", "relu6", "gelu", "silu"]
ACTIVATIONS: tuple[Activation, ...] = ("none", "relu", "relu6", "gelu", "silu")
_ACTIVATION_MODULES = {
    "none": nn.Identity,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

# ---------------------------------------------------------------------------------------------
# The description
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """conv (padding ``kernel_size // 2``) → BatchNorm (optional) → activation."""

    in_channels: int
    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    groups: int = 1
    bias: bool = False
    batchnorm: bool = True
    activation: Activation = "relu"

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def grouped(self) -> bool:
        """Grouped but not depthwise: ``1 < groups`` dividing both channel counts."""
        return self.groups > 1 and not self.depthwise


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """2x2 max- or average-pooling, stride 2."""

    channels: int
    kind: Literal["max", "avg"] = "max"

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def out_channels(self) -> int:
        return self.channels


@dataclasses.dataclass(frozen=True)
class ResidualSpec:
    """activation(body(x) + shortcut(x)); the shortcut is the identity or a 1x1 conv (+ BN)."""

    body: tuple[ConvSpec, ...]
    projection: ConvSpec | None = None
    activation: Activation = "relu"

    @property
    def in_channels(self) -> int:
        return self.body[0].in_channels

    @property
    def out_channels(self) -> int:
        return self.body[-1].out_channels


@dataclasses.dataclass(frozen=True)
class ConcatSpec:
    """DenseNet-like: torch.cat([x, body(x)], dim=1)."""

    body: tuple[ConvSpec, ...]

    @property
    def in_channels(self) -> int:
        return self.body[0].in_channels

    @property
    def out_channels(self) -> int:
        return self.in_channels + self.body[-1].out_channels


@dataclasses.dataclass(frozen=True)
class SharedSpec:
    """One body run twice, on both halves of a conv's output (shared weights, as in a Siamese
    branch): ``a, b = split(x).chunk(2, dim=1); torch.cat([body(a), body(b)], dim=1)``.

    The halves come from one plain conv, so that channel ``p`` of ``a`` and of ``b`` (which the
    shared body's input channel ``p`` ties) are two outputs of the same layer."""

    split: ConvSpec
    body: tuple[ConvSpec, ...]

    @property
    def in_channels(self) -> int:
        return self.split.in_channels

    @property
    def out_channels(self) -> int:
        return 2 * self.body[-1].out_channels


@dataclasses.dataclass(frozen=True)
class UpSpec:
    """A decoder's upsampling: transposed conv (2x2, stride 2) → BatchNorm (optional) → activation.
    Its weight holds output channels in dim 1 (``(in, out, 2, 2)``)."""

    in_channels: int
    out_channels: int
    bias: bool = False
    batchnorm: bool = True
    activation: Activation = "relu"


Block = Union[ConvSpec, PoolSpec, ResidualSpec, ConcatSpec, SharedSpec, UpSpec]


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """Global avg/max pooling, or a flatten of the (at most 4x4) map, then linear layers.

    ``area`` is the number of spatial positions the first linear layer reads per channel
    (1 after global pooling). A map larger than 4x4 is first average-pooled to 2x2.
    """

    channels: int
    pooling: Literal["avg", "max", "flatten"]
    area: int
    hidden: int | None
    hidden_activation: Activation
    classes: int


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A random CNN: input shape, feature blocks, head, and the seed of its weights."""

    in_channels: int
    size: int
    blocks: tuple[Block, ...]
    head: HeadSpec
    seed: int
    batch: int = BATCH

    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.size, self.size)


def block_stride(block: Block) -> int:
    if isinstance(block, ConvSpec):
        return block.stride
    if isinstance(block, PoolSpec):
        return 2
    if isinstance(block, UpSpec):
        return 1  # it upsamples: see output_size
    split = block.split.stride if isinstance(block, SharedSpec) else 1
    return split * math.prod(c.stride for c in block.body)


def output_size(block: Block, size: int) -> int:
    """Spatial size after ``block``: convs (padding k // 2) round up, 2x2 pools round down, a
    transposed conv doubles."""
    if isinstance(block, PoolSpec):
        return size // 2
    if isinstance(block, UpSpec):
        return 2 * size
    for _ in range(int(math.log2(block_stride(block)))):
        size = (size + 1) // 2
    return size


# ---------------------------------------------------------------------------------------------
# Building the model
# ---------------------------------------------------------------------------------------------


class _ConvBnAct(nn.Module):
    """``conv`` → BatchNorm (optional) → activation: a conv unit and an upsampling unit alike."""

    def __init__(self, conv: nn.Module, spec: ConvSpec | UpSpec):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(spec.out_channels) if spec.batchnorm else nn.Identity()
        self.act = _ACTIVATION_MODULES[spec.activation]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class ConvUnit(_ConvBnAct):
    def __init__(self, spec: ConvSpec):
        k = spec.kernel_size
        conv = nn.Conv2d(spec.in_channels, spec.out_channels, k, spec.stride, k // 2, groups=spec.groups, bias=spec.bias)
        super().__init__(conv, spec)


class ResidualUnit(nn.Module):
    def __init__(self, spec: ResidualSpec):
        super().__init__()
        self.body = nn.Sequential(*(ConvUnit(c) for c in spec.body))
        self.shortcut = ConvUnit(spec.projection) if spec.projection else nn.Identity()
        self.act = _ACTIVATION_MODULES[spec.activation]()

    def forward(self, x):
        return self.act(torch.add(self.body(x), self.shortcut(x)))


class UpUnit(_ConvBnAct):
    def __init__(self, spec: UpSpec):
        super().__init__(nn.ConvTranspose2d(spec.in_channels, spec.out_channels, 2, stride=2, bias=spec.bias), spec)


class ConcatUnit(nn.Module):
    def __init__(self, spec: ConcatSpec):
        super().__init__()
        self.body = nn.Sequential(*(ConvUnit(c) for c in spec.body))

    def forward(self, x):
        return torch.cat([x, self.body(x)], dim=1)


class SharedUnit(nn.Module):
    def __init__(self, spec: SharedSpec):
        super().__init__()
        self.split = ConvUnit(spec.split)
        self.body = nn.Sequential(*(ConvUnit(c) for c in spec.body))

    def forward(self, x):
        a, b = self.split(x).chunk(2, dim=1)
        return torch.cat([self.body(a), self.body(b)], dim=1)


class Head(nn.Module):
    def __init__(self, spec: HeadSpec):
        super().__init__()
        if spec.pooling == "avg":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        elif spec.pooling == "max":
            self.pool = nn.AdaptiveMaxPool2d(1)
        else:
            self.pool = nn.AdaptiveAvgPool2d(2) if spec.area == 4 else nn.Identity()
        self.flatten = nn.Flatten()
        features = spec.channels * spec.area
        if spec.hidden is not None:
            self.hidden: nn.Module = nn.Linear(features, spec.hidden)
            features = spec.hidden
        else:
            self.hidden = nn.Identity()
        self.act = _ACTIVATION_MODULES[spec.hidden_activation]()
        self.classifier = nn.Linear(features, spec.classes)

    def forward(self, x):
        return self.classifier(self.act(self.hidden(self.flatten(self.pool(x)))))


class RandomCNN(nn.Module):
    """The model an :class:`Architecture` describes: ``features.<i>`` blocks, then ``head``."""

    def __init__(self, architecture: Architecture):
        super().__init__()
        self.features = nn.Sequential(*(_block_module(b) for b in architecture.blocks))
        self.head = Head(architecture.head)

    def forward(self, x):
        return self.head(self.features(x))


def _block_module(block: Block) -> nn.Module:
    if isinstance(block, ConvSpec):
        return ConvUnit(block)
    if isinstance(block, PoolSpec):
        return nn.MaxPool2d(2) if block.kind == "max" else nn.AvgPool2d(2)
    if isinstance(block, ResidualSpec):
        return ResidualUnit(block)
    if isinstance(block, SharedSpec):
        return SharedUnit(block)
    if isinstance(block, UpSpec):
        return UpUnit(block)
    return ConcatUnit(block)


def _randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Weights scaled by fan-in (activations stay of order one); BatchNorm scale, shift, running
    mean and variance all random, so that a channel whose BatchNorm shift leaked past a removal
    would show in the output."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                # a transposed conv's weight is (in, out, k, k): each output sums in · k² / stride²
                fan_in = module.weight[0].numel() if not isinstance(module, nn.ConvTranspose2d) else module.in_channels
                module.weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.5, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.5, generator=generator)
                module.running_mean.normal_(0.0, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)


def build(architecture: Architecture) -> RandomCNN:
    """The model of ``architecture``, in train mode; the same weights for the same description."""
    model = RandomCNN(architecture)
    _randomise(model, torch.Generator().manual_seed(architecture.seed))
    return model


def example_input(architecture: Architecture) -> torch.Tensor:
    generator = torch.Generator().manual_seed(architecture.seed + 1)
    return torch.randn(architecture.input_shape(), generator=generator)
