"""A bound on Torch-Pruning's dependency walk, so that a walk that never settles becomes a refusal.

``DependencyGraph.get_pruning_group`` follows a root's channels from node to node and stops where
it meets a (node, pruning function, indices) it already holds. Where channels are followed
through operations whose channel axis is not dim 1 (MaxViT's attention over ``[B, G, P, D]``
tokens: a chunk of the last axis, reshapes into heads, matrix products), its index mappings
produce new, ever larger index lists on each round of a cycle, and the walk runs until memory
runs out (over 10 GiB after ten minutes on ``maxvit_t``).

A walk that settles adds each (node, pruning function) once: that is what every torchvision
model that prunes does (measured: at most one addition per pair on DenseNet-121, GoogLeNet,
ShuffleNetV2, RegNetY, EfficientNet-B0, ResNeXt-50, MobileNetV3, SqueezeNet). So
:func:`bounded_walk` stops a walk once any pair comes back :data:`REVISITS` times and raises
:class:`WalkDiverged` naming the node it keeps returning to.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from torch_pruning.dependency import Node
from torch_pruning.dependency import group as tp_group

REVISITS = 8  # far above the one addition per pair of a walk that settles


class WalkDiverged(Exception):
    """The dependency walk keeps returning to ``node`` with new channel indices."""

    def __init__(self, node: Node):
        super().__init__(node)
        self.node = node


@contextmanager
def bounded_walk(limit: int = REVISITS) -> Iterator[None]:
    """Within the block, a pruning group that adds one (node, pruning function) ``limit`` times
    raises :class:`WalkDiverged`. Torch-Pruning's ``Group.add_dep`` is wrapped for the block only."""
    original = tp_group.Group.add_dep

    def add_dep(group, dep, idxs):
        original(group, dep, idxs)
        counts = group.__dict__.setdefault("_pytest_prune_additions", Counter())
        key = (id(dep.target), dep.handler)
        counts[key] += 1
        if counts[key] >= limit:
            raise WalkDiverged(dep.target)

    tp_group.Group.add_dep = add_dep
    try:
        yield
    finally:
        tp_group.Group.add_dep = original
