"""Hypothesis strategies: random architectures, built models, channel plans and pruning cases
(the ``ci`` / ``dev`` settings profiles are in :mod:`.profiles`)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from hypothesis import assume
from hypothesis import strategies as st

from ..groups import ChannelGroup
from ..plan import PrunePlan
from .architectures import (
    ACTIVATIONS,
    MAX_CHANNELS,
    MAX_SIZE,
    Activation,
    Architecture,
    Block,
    ConcatSpec,
    ConvSpec,
    HeadSpec,
    PoolSpec,
    RandomCNN,
    ResidualSpec,
    SharedSpec,
    UpSpec,
    build,
    example_input,
    output_size,
)

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
def up_blocks(draw, in_channels: int) -> UpSpec:
    """A decoder's 2x upsampling: transposed conv → (BatchNorm) → activation."""
    return UpSpec(in_channels, draw(st.integers(1, MAX_CHANNELS)), draw(st.booleans()),
                  draw(st.booleans()), draw(activations()))


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
    """One feature stage: a conv unit, a pool, a residual, concat or shared-weights block, a
    decoder's upsampling (while the map stays ≤ MAX_SIZE), or a depthwise-separable pair."""
    kinds = ["conv", "residual", "shared"]
    if size >= 2:
        kinds.append("pool")
    if in_channels < MAX_CHANNELS:
        kinds.append("concat")
    if in_channels > 1:
        kinds.append("separable")
    if 2 * size <= MAX_SIZE:
        kinds += ["up", "up"]  # allowed only on small maps: drawn twice as often to be seen often
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
    if kind == "up":
        return (draw(up_blocks(in_channels)),)
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
        from ..surgery import find_channel_groups  # the surgery, not this module, imports the engine

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

