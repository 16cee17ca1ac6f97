"""The oracle: channels followed through an :class:`~pytest_prune.testing.architectures.Architecture`
description alone, without Torch-Pruning: which channels are one, and what shape every conv,
linear and BatchNorm layer must have after a plan."""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Literal, Sequence

from torch import nn

from ..groups import ChannelGroup
from ..plan import PrunePlan
from .architectures import Architecture, Block, ConcatSpec, ConvSpec, HeadSpec, PoolSpec, SharedSpec, UpSpec

# ---------------------------------------------------------------------------------------------
# The oracle: channels followed through the description
# ---------------------------------------------------------------------------------------------

Node = tuple[str, int]  # (producing module, output position); "<input>" for the image's channels
LayerKind = Literal["conv", "transposed", "linear", "batchnorm"]


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
        if self.kind == "transposed":
            k = self.kernel_size
            weight: tuple[int, ...] = (self.in_width, self.out_width // self.groups, k, k)
        elif self.kind == "conv":
            k = self.kernel_size
            weight = (self.out_width, self.in_width // self.groups, k, k)
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
        if isinstance(block, UpSpec):
            return self._up(prefix, block, stream)
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

    def _up(self, prefix: str, block: UpSpec, stream: list[Node]) -> list[Node]:
        """A transposed conv: new output channels, like a conv's (its weight is laid out the other way)."""
        name = f"{prefix}.conv"
        outputs = tuple((name, o) for o in range(block.out_channels))
        self.layers[name] = _Layer("transposed", tuple(stream), outputs, 1, 2, block.bias)
        if block.batchnorm:
            self.layers[f"{prefix}.bn"] = _Layer("batchnorm", outputs, outputs)
        return list(outputs)

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
        elif isinstance(m, nn.ConvTranspose2d):
            out[name] = LayerShape(
                "transposed", m.in_channels, m.out_channels, m.groups, m.kernel_size[0], m.bias is not None
            )
        elif isinstance(m, nn.Linear):
            out[name] = LayerShape("linear", m.in_features, m.out_features, bias=m.bias is not None)
        elif isinstance(m, nn.BatchNorm2d):
            out[name] = LayerShape("batchnorm", m.num_features, m.num_features)
    return out
