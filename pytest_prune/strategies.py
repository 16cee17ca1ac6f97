"""Hypothesis strategies for random CNNs and pruning plans, and what pruning them must give.

The public face of :mod:`pytest_prune.testing`: descriptions and models in
:mod:`~pytest_prune.testing.architectures`, the oracle in :mod:`~pytest_prune.testing.oracle`,
strategies and profiles in :mod:`~pytest_prune.testing.strategies`; every name is re-exported here.

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

from .groups import ChannelGroup  # noqa: F401  (falsifying examples print as code using these)
from .modes import torch_threads
from .plan import PrunePlan  # noqa: F401
from .testing.architectures import (
    ACTIVATIONS,
    BATCH,
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
    SharedUnit,
    UpSpec,
    UpUnit,
    block_stride,
    build,
    example_input,
    output_size,
)
from .testing.oracle import (
    ChannelFlow,
    LayerShape,
    expected_parameter_count,
    expected_shapes,
    measured_shapes,
    parameter_shapes,
)
from .testing.profiles import register_profiles, selected_profile
from .testing.strategies import (
    BuiltCNN,
    PruningCase,
    activations,
    architectures,
    channel_choices,
    cnns,
    concat_blocks,
    conv_bodies,
    convs,
    depthwise_separable,
    heads,
    pools,
    pruning_cases,
    removals,
    residual_blocks,
    shared_blocks,
    stages,
    up_blocks,
)

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
    "UpSpec",
    "UpUnit",
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
    "up_blocks",
]
