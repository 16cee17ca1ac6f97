"""Hypothesis strategies for random CNNs and pruning plans, and what pruning them must give.

The pieces, in the order a property test uses them:

    architectures()  → an :class:`Architecture`: a small, printable description of a CNN
    build()          → the ``nn.Module`` it describes, with random weights and BatchNorm statistics
    cnns()           → both at once, with an example input (:class:`BuiltCNN`)
    channel_choices()→ a :class:`~pytest_prune.plan.PrunePlan` for given channel groups
    pruning_cases()  → all of it, grouped by :func:`pytest_prune.surgery.find_channel_groups`

:class:`ChannelFlow` is the independent oracle: it follows the channels through the *description*
(residual additions tie two producers' channels into one, concatenation places channels side by
side, a depthwise conv carries its input's channels) and says, without Torch-Pruning, which
channels are one, and what shape every conv, linear and BatchNorm layer must have after a plan.

Models stay tiny (≤ 16 channels, ≤ 16x16 inputs, batch 2) so that hundreds run in seconds. Every
activation used maps zero to zero, which is what makes a pruned model equal to the masked dense one
(:mod:`pytest_prune.masking`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Iterable, Iterator, Literal, Sequence, Union

import torch
from hypothesis import assume, settings
from hypothesis import strategies as st
from torch import nn

from .groups import ChannelGroup
from .plan import PrunePlan

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


Block = Union[ConvSpec, PoolSpec, ResidualSpec, ConcatSpec, SharedSpec]


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
    split = block.split.stride if isinstance(block, SharedSpec) else 1
    return split * math.prod(c.stride for c in block.body)


def output_size(block: Block, size: int) -> int:
    """Spatial size after ``block``: convs (padding k // 2) round up, 2x2 pools round down."""
    if isinstance(block, PoolSpec):
        return size // 2
    for _ in range(int(math.log2(block_stride(block)))):
        size = (size + 1) // 2
    return size


# ---------------------------------------------------------------------------------------------
# Building the model
# ---------------------------------------------------------------------------------------------


class ConvUnit(nn.Module):
    def __init__(self, spec: ConvSpec):
        super().__init__()
        self.conv = nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            spec.stride,
            spec.kernel_size // 2,
            groups=spec.groups,
            bias=spec.bias,
        )
        self.bn = nn.BatchNorm2d(spec.out_channels) if spec.batchnorm else nn.Identity()
        self.act = _ACTIVATION_MODULES[spec.activation]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class ResidualUnit(nn.Module):
    def __init__(self, spec: ResidualSpec):
        super().__init__()
        self.body = nn.Sequential(*(ConvUnit(c) for c in spec.body))
        self.shortcut = ConvUnit(spec.projection) if spec.projection else nn.Identity()
        self.act = _ACTIVATION_MODULES[spec.activation]()

    def forward(self, x):
        return self.act(torch.add(self.body(x), self.shortcut(x)))


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
    return ConcatUnit(block)


def _randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Weights scaled by fan-in (activations stay of order one); BatchNorm scale, shift, running
    mean and variance all random, so that a channel whose BatchNorm shift leaked past a removal
    would show in the output."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
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


@contextlib.contextmanager
def torch_threads(count: int = 1) -> Iterator[None]:
    """Run torch on ``count`` threads for the block. Models this small run several times faster
    on one thread than on a few shared cores, where thread hand-offs cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# The oracle: channels followed through the description
# ---------------------------------------------------------------------------------------------

Node = tuple[str, int]  # (producing module, output position); "<input>" for the image's channels
LayerKind = Literal["conv", "linear", "batchnorm"]


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """The channel-dependent shape of one layer: what its attributes and weights must say."""

    kind: LayerKind
    in_width: int  # in_channels, in_features, num_features
    out_width: int  # out_channels, out_features, num_features
    groups: int = 1
    kernel_size: int = 1
    bias: bool = True

    def parameter_shapes(self, name: str) -> dict[str, tuple[int, ...]]:
        if self.kind == "batchnorm":
            return {f"{name}.weight": (self.out_width,), f"{name}.bias": (self.out_width,)}
        if self.kind == "conv":
            k = self.kernel_size
            weight: tuple[int, ...] = (self.out_width, self.in_width // self.groups, k, k)
        else:
            weight = (self.out_width, self.in_width)
        shapes = {f"{name}.weight": weight}
        if self.bias:
            shapes[f"{name}.bias"] = (self.out_width,)
        return shapes


@dataclasses.dataclass(frozen=True)
class _Layer:
    kind: LayerKind
    inputs: tuple[Node, ...]  # the channel at each input position (flattened: channel-major)
    outputs: tuple[Node, ...]  # the channel at each output position
    groups: int = 1
    kernel_size: int = 1
    bias: bool = True
    depthwise: bool = False


class ChannelFlow:
    """The channels of an :class:`Architecture`, followed through its description alone.

    Every output position of a conv or linear layer starts as its own channel. A residual addition
    makes the two channels it adds one channel; a depthwise conv and a BatchNorm carry their input
    channels unchanged; concatenation places its inputs' channels side by side. Channels that
    contain an input-image channel or a classifier output are *fixed*: no plan may remove them; so
    are channels with a producer named in ``ignore``.

    A grouped conv (1 < groups, not depthwise) loses channels in equal numbers from each of its
    groups, so the channels at the same within-group offset of its inputs (and of its outputs) form
    one *bundle*, removed together: one position of a channel group. A bundle with a fixed channel
    is fixed, and so is one that joins channels of different root layers (the conv reads a
    concatenation). The strategies draw no grouped conv with a single output per group (the
    engine refuses it).
    """

    def __init__(self, architecture: Architecture, ignore: Iterable[str] = ()):
        self._parent: dict[Node, Node] = {}
        self.layers: dict[str, _Layer] = {}
        self._fixed: list[Node] = []
        self.ignore = frozenset(ignore)
        stream = [("<input>", c) for c in range(architecture.in_channels)]
        self._fixed.extend(stream)
        for i, block in enumerate(architecture.blocks):
            stream = self._block(f"features.{i}", block, stream)
        self._head("head", architecture.head, stream)
        self._bundles = self._bundle_channels()

    # -- union-find over nodes --------------------------------------------------------------
    def channel(self, node: Node) -> Node:
        """The representative of the channel that ``node`` belongs to."""
        parent = self._parent.setdefault(node, node)
        if parent != node:
            parent = self._parent[node] = self.channel(parent)
        return parent

    def _tie(self, a: Node, b: Node) -> None:
        ra, rb = self.channel(a), self.channel(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    # -- walking the description ------------------------------------------------------------
    def _conv_unit(self, prefix: str, spec: ConvSpec, stream: list[Node]) -> list[Node]:
        name = f"{prefix}.conv"
        if spec.depthwise:
            outputs = tuple(stream)
        else:
            outputs = tuple((name, o) for o in range(spec.out_channels))
        self.layers[name] = _Layer(
            "conv", tuple(stream), outputs, spec.groups, spec.kernel_size, spec.bias, spec.depthwise
        )
        if spec.batchnorm:
            self.layers[f"{prefix}.bn"] = _Layer("batchnorm", outputs, outputs)
        return list(outputs)

    def _block(self, prefix: str, block: Block, stream: list[Node]) -> list[Node]:
        if isinstance(block, ConvSpec):
            return self._conv_unit(prefix, block, stream)
        if isinstance(block, PoolSpec):
            return stream
        if isinstance(block, SharedSpec):
            return self._shared(prefix, block, stream)
        body = stream
        for j, spec in enumerate(block.body):
            body = self._conv_unit(f"{prefix}.body.{j}", spec, body)
        if isinstance(block, ConcatSpec):
            return stream + body
        shortcut = stream
        if block.projection is not None:
            shortcut = self._conv_unit(f"{prefix}.shortcut", block.projection, stream)
        for a, b in zip(body, shortcut, strict=True):
            self._tie(a, b)
        return body

    def _shared(self, prefix: str, block: SharedSpec, stream: list[Node]) -> list[Node]:
        """The body's input channel ``p`` reads channel ``p`` of both halves: one channel. Its
        layers are described once (their weights are), and their outputs appear twice."""
        halves = self._conv_unit(f"{prefix}.split", block.split, stream)
        half = len(halves) // 2
        for a, b in zip(halves[:half], halves[half:], strict=True):
            self._tie(a, b)
        body = halves[:half]
        for j, spec in enumerate(block.body):
            body = self._conv_unit(f"{prefix}.body.{j}", spec, body)
        return body + body

    def _head(self, prefix: str, head: HeadSpec, stream: list[Node]) -> None:
        features = tuple(node for node in stream for _ in range(head.area))
        if head.hidden is not None:
            hidden = tuple((f"{prefix}.hidden", o) for o in range(head.hidden))
            self.layers[f"{prefix}.hidden"] = _Layer("linear", features, hidden)
            features = hidden
        classes = tuple((f"{prefix}.classifier", k) for k in range(head.classes))
        self.layers[f"{prefix}.classifier"] = _Layer("linear", features, classes)
        self._fixed.extend(classes)

    # -- bundles: channels a grouped conv ties -----------------------------------------------
    def _bundling_convs(self) -> list[str]:
        """Grouped convs that prune by bundles: 1 < groups, more than one output per group."""
        return [
            name for name, layer in self.layers.items()
            if layer.kind == "conv" and layer.groups > 1 and layer.groups != len(layer.outputs)
        ]

    def _bundle_channels(self) -> dict[Node, frozenset[Node]]:
        parent: dict[Node, Node] = {}

        def find(c: Node) -> Node:
            while parent.setdefault(c, c) != c:
                c = parent[c]
            return c

        for name in self._bundling_convs():
            layer = self.layers[name]
            for nodes in (layer.inputs, layer.outputs):
                per_group = len(nodes) // layer.groups
                for i, node in enumerate(nodes):
                    partner = self.channel(nodes[i % per_group])
                    a, b = find(self.channel(node)), find(partner)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
        bundles: dict[Node, set[Node]] = {}
        for c in list(parent):
            bundles.setdefault(find(c), set()).add(c)
        return {c: frozenset(b) for b in bundles.values() for c in b}

    def bundle(self, channel: Node) -> frozenset[Node]:
        """The channels removed together with ``channel`` (itself alone outside grouped convs)."""
        channel = self.channel(channel)
        return self._bundles.get(channel, frozenset({channel}))

    def root(self, channel: Node) -> str:
        """The first conv or linear layer, in module order, that writes ``channel``: the layer
        the engine names its group after."""
        channel = self.channel(channel)
        return next(
            name for name, layer in self.layers.items()
            if layer.kind != "batchnorm" and any(self.channel(n) == channel for n in layer.outputs)
        )

    # -- questions ----------------------------------------------------------------------------
    def interface_channels(self) -> set[Node]:
        """Channels tied to the model's input image or to its classifier outputs."""
        return {self.channel(n) for n in self._fixed}

    def fixed_channels(self) -> set[Node]:
        """Interface channels, channels with a producer in ``ignore``, their bundles, and bundles
        that join channels of several roots (the engine cuts one root's group at a time)."""
        ignored = {self.channel(n) for name in self.ignore for n in self.layers[name].outputs}
        fixed = {c for f in self.interface_channels() | ignored for c in self.bundle(f)}
        for bundle in set(self._bundles.values()):
            if len({self.root(c) for c in bundle - fixed}) > 1:
                fixed |= bundle
        return fixed

    def prunable_channels(self) -> set[Node]:
        """Every channel produced by some layer that no plan is forbidden to remove."""
        produced = {self.channel(n) for layer in self.layers.values() for n in layer.outputs}
        return produced - self.fixed_channels()

    def members(self, channels: Node | Iterable[Node]) -> tuple[frozenset[Node], frozenset[Node]]:
        """(producer, consumer) positions of a channel, or of a bundle of them: (module name,
        weight position) pairs.

        Producers are output positions of convs, linears and BatchNorms (depthwise convs included);
        consumers are input positions of convs and linears (a grouped conv's input channels, not
        its weight's columns), except depthwise convs, whose input position is their output
        position.
        """
        single = isinstance(channels, tuple) and isinstance(channels[0], str)
        wanted = {self.channel(channels)} if single else {self.channel(c) for c in channels}

        def positions(name: str, nodes: Sequence[Node]) -> set[Node]:
            return {(name, p) for p, n in enumerate(nodes) if self.channel(n) in wanted}

        producers, consumers = set(), set()
        for name, layer in self.layers.items():
            producers |= positions(name, layer.outputs)
            if layer.kind != "batchnorm" and not layer.depthwise:
                consumers |= positions(name, layer.inputs)
        return frozenset(producers), frozenset(consumers)

    def removed_channels(self, groups: Sequence[ChannelGroup], plan: PrunePlan) -> set[Node]:
        """The channels ``plan`` removes, located through each group's root module and indices
        (with the bundle of each)."""
        by_name = {g.name: g for g in groups}
        removed = set()
        for group_name, positions in plan.remove.items():
            group = by_name[group_name]
            if positions and group.root not in self.layers:
                raise ValueError(
                    f"group {group_name!r} is rooted at {group.root!r}, which is not a conv, "
                    f"linear or BatchNorm layer of the description (known: {sorted(self.layers)})"
                )
            for p in positions:
                removed |= self.bundle(self.layers[group.root].outputs[group.root_indices[p]])
        return removed

    def shapes(self, removed: set[Node] = frozenset()) -> dict[str, LayerShape]:
        """Every layer's shape once the channels in ``removed`` are gone."""

        def kept(nodes: Sequence[Node]) -> int:
            return sum(self.channel(n) not in removed for n in nodes)

        out = {}
        for name, layer in self.layers.items():
            width_in, width_out = kept(layer.inputs), kept(layer.outputs)
            groups = width_out if layer.depthwise else layer.groups
            out[name] = LayerShape(
                layer.kind, width_in, width_out, groups, layer.kernel_size, layer.bias
            )
        return out


def expected_shapes(
    architecture: Architecture, groups: Sequence[ChannelGroup], plan: PrunePlan
) -> dict[str, LayerShape]:
    """The shape of every conv, linear and BatchNorm layer of ``build(architecture)`` after
    ``plan``, computed from the description (not from the pruning engine)."""
    flow = ChannelFlow(architecture)
    return flow.shapes(flow.removed_channels(groups, plan))


def parameter_shapes(shapes: dict[str, LayerShape]) -> dict[str, tuple[int, ...]]:
    """Parameter name → shape, for the layers of ``shapes`` (as ``model.named_parameters()``)."""
    return {k: v for name, layer in shapes.items() for k, v in layer.parameter_shapes(name).items()}


def expected_parameter_count(shapes: dict[str, LayerShape]) -> int:
    return sum(math.prod(shape) for shape in parameter_shapes(shapes).values())


def measured_shapes(model: nn.Module) -> dict[str, LayerShape]:
    """The same, read from a model's layer attributes (what its forward and MACs counting use)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            bias = m.bias is not None
            out[name] = LayerShape(
                "conv", m.in_channels, m.out_channels, m.groups, m.kernel_size[0], bias
            )
        elif isinstance(m, nn.Linear):
            out[name] = LayerShape("linear", m.in_features, m.out_features, bias=m.bias is not None)
        elif isinstance(m, nn.BatchNorm2d):
            out[name] = LayerShape("batchnorm", m.num_features, m.num_features)
    return out


# ---------------------------------------------------------------------------------------------
# Strategies: building blocks
# ---------------------------------------------------------------------------------------------


def activations() -> st.SearchStrategy[Activation]:
    return st.sampled_from(ACTIVATIONS)


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


def _group_counts(in_channels: int, out_channels: int | None) -> list[int]:
    """Group counts for a grouped (not depthwise) conv from ``in_channels`` to ``out_channels``
    (None: any width that fits MAX_CHANNELS), with at least two outputs per group: a conv with
    one output per group but several inputs is one Torch-Pruning takes for a depthwise conv, and
    the engine refuses it."""
    if out_channels is None:
        return [g for g in _divisors(in_channels) if 2 * g <= MAX_CHANNELS]
    return [
        g
        for g in _divisors(in_channels)
        if out_channels % g == 0 and out_channels // g >= 2
    ]


@st.composite
def convs(draw, in_channels: int, *, out_channels: int | None = None, stride: int = 1) -> ConvSpec:
    """A plain, grouped or depthwise conv unit reading ``in_channels``.

    ``out_channels`` fixes the width (a residual body must end on the shortcut's width); kinds
    that cannot give it fall back to a plain conv.
    """
    kind = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    groups = 1
    if kind == "depthwise" and in_channels > 1 and out_channels in (None, in_channels):
        out_channels = groups = in_channels
    elif kind == "grouped":
        counts = _group_counts(in_channels, out_channels)
        if counts:
            groups = draw(st.sampled_from(counts))
            if out_channels is None:
                out_channels = groups * draw(st.integers(2, MAX_CHANNELS // groups))
    if out_channels is None:
        out_channels = draw(st.integers(1, MAX_CHANNELS))
    return ConvSpec(
        in_channels,
        out_channels,
        kernel_size=draw(st.sampled_from([3, 1])),
        stride=stride,
        groups=groups,
        bias=draw(st.booleans()),
        batchnorm=draw(st.booleans()),
        activation=draw(activations()),
    )


@st.composite
def conv_bodies(
    draw, in_channels: int, out_channels: int | None, *, stride: int = 1, max_convs: int = 3
) -> tuple[ConvSpec, ...]:
    """1 to ``max_convs`` conv units; the first has ``stride``, the last ``out_channels``."""
    length = draw(st.integers(1, max_convs))
    body: list[ConvSpec] = []
    channels = in_channels
    for j in range(length):
        last = j == length - 1
        width = out_channels if last else None
        spec = draw(convs(channels, out_channels=width, stride=stride if j == 0 else 1))
        body.append(spec)
        channels = spec.out_channels
    return tuple(body)


@st.composite
def pools(draw, channels: int) -> PoolSpec:
    return PoolSpec(channels, draw(st.sampled_from(["max", "avg"])))


@st.composite
def residual_blocks(draw, in_channels: int, size: int) -> ResidualSpec:
    """Identity shortcut (same width, stride 1), or a 1x1 projection (any width, stride 1 or 2)."""
    projection = draw(st.booleans())
    if not projection:
        body = draw(conv_bodies(in_channels, in_channels))
        return ResidualSpec(body, None, draw(activations()))
    stride = draw(st.sampled_from([1, 2])) if size >= 2 else 1
    out = draw(st.integers(1, MAX_CHANNELS))
    body = draw(conv_bodies(in_channels, out, stride=stride))
    shortcut = ConvSpec(
        in_channels, out, kernel_size=1, stride=stride, bias=draw(st.booleans()),
        batchnorm=draw(st.booleans()), activation="none",
    )  # fmt: skip
    return ResidualSpec(body, shortcut, draw(activations()))


@st.composite
def concat_blocks(draw, in_channels: int) -> ConcatSpec:
    """x → cat([x, body(x)]): the body grows the stream by at most MAX_CHANNELS - in_channels."""
    growth = draw(st.integers(1, MAX_CHANNELS - in_channels))
    return ConcatSpec(draw(conv_bodies(in_channels, growth, max_convs=2)))


@st.composite
def shared_blocks(draw, in_channels: int) -> SharedSpec:
    """A plain conv to ``2·h`` channels, then one body of 1 or 2 conv units run on both halves."""
    half = draw(st.integers(1, MAX_CHANNELS // 2))
    split = ConvSpec(
        in_channels, 2 * half, kernel_size=draw(st.sampled_from([3, 1])), bias=draw(st.booleans()),
        batchnorm=draw(st.booleans()), activation=draw(activations()),
    )  # fmt: skip
    body = draw(conv_bodies(half, draw(st.integers(1, MAX_CHANNELS // 2)), max_convs=2))
    return SharedSpec(split, body)


@st.composite
def depthwise_separable(draw, in_channels: int, size: int) -> tuple[ConvSpec, ConvSpec]:
    """MobileNet's block: depthwise 3x3 (stride 1 or 2) → BN → act, pointwise 1x1 → BN → act."""
    stride = draw(st.sampled_from([1, 2])) if size >= 2 else 1
    act = draw(activations())
    depthwise = ConvSpec(in_channels, in_channels, 3, stride, in_channels, False, True, act)
    pointwise = ConvSpec(in_channels, draw(st.integers(1, MAX_CHANNELS)), 1, 1, 1, False, True, act)
    return depthwise, pointwise


@st.composite
def stages(draw, in_channels: int, size: int) -> tuple[Block, ...]:
    """One feature stage: a conv unit, a pool, a residual, concat or shared-weights block, or a
    depthwise-separable pair."""
    kinds = ["conv", "residual", "shared"]
    if size >= 2:
        kinds.append("pool")
    if in_channels < MAX_CHANNELS:
        kinds.append("concat")
    if in_channels > 1:
        kinds.append("separable")
    kind = draw(st.sampled_from(kinds))
    if kind == "conv":
        stride = draw(st.sampled_from([1, 2])) if size >= 2 else 1
        return (draw(convs(in_channels, stride=stride)),)
    if kind == "pool":
        return (draw(pools(in_channels)),)
    if kind == "residual":
        return (draw(residual_blocks(in_channels, size)),)
    if kind == "concat":
        return (draw(concat_blocks(in_channels)),)
    if kind == "shared":
        return (draw(shared_blocks(in_channels)),)
    return draw(depthwise_separable(in_channels, size))


@st.composite
def heads(draw, channels: int, size: int) -> HeadSpec:
    """Global pooling or a flatten of the map, an optional hidden linear layer, the classifier."""
    pooling = draw(st.sampled_from(["avg", "max", "flatten"]))
    area = 1 if pooling != "flatten" else (size * size if size <= 4 else 4)
    hidden = draw(st.none() | st.integers(1, MAX_CHANNELS))
    return HeadSpec(channels, pooling, area, hidden, draw(activations()), draw(st.integers(1, 4)))


@st.composite
def architectures(draw, *, max_stages: int = 4) -> Architecture:
    """A random CNN description: 1 to ``max_stages`` stages on a ≤ 16x16 input, then a head."""
    in_channels = draw(st.integers(1, 3))
    size = draw(st.integers(1, MAX_SIZE))
    blocks: list[Block] = []
    channels, spatial = in_channels, size
    for _ in range(draw(st.integers(1, max_stages))):
        for block in draw(stages(channels, spatial)):
            blocks.append(block)
            channels, spatial = block.out_channels, output_size(block, spatial)
    head = draw(heads(channels, spatial))
    return Architecture(in_channels, size, tuple(blocks), head, draw(st.integers(0, 2**31 - 1)))


@dataclasses.dataclass(frozen=True)
class BuiltCNN:
    """A model with its description and example input; ``BuiltCNN.of(architecture)`` rebuilds it."""

    architecture: Architecture
    model: RandomCNN
    example_input: torch.Tensor

    @classmethod
    def of(cls, architecture: Architecture) -> BuiltCNN:
        return cls(architecture, build(architecture), example_input(architecture))

    def _repr_pretty_(self, printer, cycle) -> None:
        # Falsifying examples print as code that rebuilds them, not as module and tensor dumps.
        printer.text("BuiltCNN.of(")
        printer.pretty(self.architecture)
        printer.text(")")


@st.composite
def cnns(draw, *, max_stages: int = 4) -> BuiltCNN:
    """A built model with its example input (batch 2), in train mode."""
    return BuiltCNN.of(draw(architectures(max_stages=max_stages)))


@st.composite
def removals(draw, size: int) -> tuple[int, ...]:
    """Positions to remove from a group of ``size`` channels, keeping at least one.

    Drawn as none, all but one, or any subset, so that the two extremes are common and shrinking
    goes towards removing nothing.
    """
    kind = draw(st.sampled_from(["none", "all_but_one", "subset"]))
    if kind == "none" or size == 1:
        return ()
    if kind == "all_but_one":
        keep = draw(st.integers(0, size - 1))
        return tuple(i for i in range(size) if i != keep)
    return tuple(sorted(draw(st.sets(st.integers(0, size - 1), max_size=size - 1))))


@st.composite
def channel_choices(draw, groups: Sequence[ChannelGroup]) -> PrunePlan:
    """A plan over ``groups``: a random removal for every group (each keeps ≥ 1 channel), and at
    least one channel removed wherever a group has two: a plan that removes nothing tests nothing,
    so one group, drawn from the plan's own groups, then loses one channel."""
    remove = {g.name: draw(removals(g.size)) for g in groups}
    prunable = [g for g in groups if g.size > 1]
    if prunable and not any(remove.values()):
        chosen = draw(st.sampled_from(prunable))
        remove[chosen.name] = (draw(st.integers(0, chosen.size - 1)),)
    return PrunePlan(remove)


@dataclasses.dataclass(frozen=True)
class PruningCase:
    """A model, its channel groups and a plan: everything a surgery property test needs.

    ``model`` was put in ``training`` mode before grouping; ``build(architecture)`` rebuilds an
    untouched copy of it. ``ignore`` is empty: every layer the strategies draw can be pruned.
    """

    architecture: Architecture
    model: RandomCNN
    example_input: torch.Tensor
    training: bool
    ignore: tuple[str, ...]
    groups: tuple[ChannelGroup, ...]
    plan: PrunePlan

    @classmethod
    def of(
        cls, architecture: Architecture, training: bool, plan: PrunePlan = PrunePlan()
    ) -> PruningCase:
        """Build the model, put it in ``training`` mode and find its groups."""
        from .surgery import find_channel_groups  # the surgery, not this module, imports the engine

        cnn = BuiltCNN.of(architecture)
        cnn.model.train(training)
        ignore: tuple[str, ...] = ()
        groups = tuple(find_channel_groups(cnn.model, cnn.example_input, ignore=ignore))
        return cls(architecture, cnn.model, cnn.example_input, training, ignore, groups, plan)

    def _repr_pretty_(self, printer, cycle) -> None:
        # Falsifying examples print as code that rebuilds them.
        printer.text("PruningCase.of(")
        printer.pretty(self.architecture)
        printer.text(f", training={self.training}, plan=")
        printer.pretty(self.plan)
        printer.text(")")


@st.composite
def pruning_cases(draw, *, max_stages: int = 4) -> PruningCase:
    """A random model (train or eval mode), its channel groups, and a plan over them that removes
    at least one channel. A model without a prunable group is rejected (``assume``): its case
    would prune nothing."""
    architecture = draw(architectures(max_stages=max_stages))
    case = PruningCase.of(architecture, draw(st.booleans()))
    assume(any(g.size > 1 for g in case.groups))
    return dataclasses.replace(case, plan=draw(channel_choices(case.groups)))


# ---------------------------------------------------------------------------------------------
# Settings profiles
# ---------------------------------------------------------------------------------------------


def register_profiles() -> None:
    """Register the ``ci`` and ``dev`` settings profiles (load one with ``settings.load_profile``).

    ``ci``: 200 examples, derandomized and without the example database, so that every CI run
    tests the same examples and a failure prints a reproducible blob. ``dev``: 25 random examples,
    with the local database replaying past failures first. Both: no deadline (the first example
    pays for torch's lazy initialisation), health checks on.
    """
    settings.register_profile(
        "ci",
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=(),
    )
    settings.register_profile("dev", max_examples=25, deadline=None)


def selected_profile() -> str:
    """The profile to load: ``$HYPOTHESIS_PROFILE``, else ``ci`` if ``$CI`` is set, else ``dev``."""
    chosen = os.environ.get("HYPOTHESIS_PROFILE")
    if chosen:
        return chosen
    return "ci" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "dev"


__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Architecture",
    "BATCH",
    "Block",
    "BuiltCNN",
    "ChannelFlow",
    "ConcatSpec",
    "ConvSpec",
    "HeadSpec",
    "LayerShape",
    "MAX_CHANNELS",
    "MAX_SIZE",
    "PoolSpec",
    "PruningCase",
    "RandomCNN",
    "ResidualSpec",
    "SharedSpec",
    "SharedUnit",
    "activations",
    "architectures",
    "block_stride",
    "build",
    "channel_choices",
    "cnns",
    "concat_blocks",
    "conv_bodies",
    "convs",
    "depthwise_separable",
    "example_input",
    "expected_parameter_count",
    "expected_shapes",
    "heads",
    "measured_shapes",
    "output_size",
    "parameter_shapes",
    "pools",
    "pruning_cases",
    "register_profiles",
    "removals",
    "residual_blocks",
    "selected_profile",
    "shared_blocks",
    "stages",
    "torch_threads",
]
