"""Surgery: channel groups from Torch-Pruning's dependency graph, and pruned copies of models.

The only part of pytest-prune that imports Torch-Pruning. Everything else works on the plain
:class:`~pytest_prune.groups.ChannelGroup` description these functions return and accept.

* :func:`find_channel_groups` — trace a model, return the groups of channels removable together;
* :func:`prune_model` — a pruned deep copy of a model, from groups and a plan;
* :class:`PadShortcutPruner` — Torch-Pruning's pruner for the option-A CIFAR ResNet shortcut.
"""

from .apply import prune_model
from .grouping import find_channel_groups
from .shortcut_pruner import PadShortcutPruner

__all__ = ["find_channel_groups", "prune_model", "PadShortcutPruner"]
