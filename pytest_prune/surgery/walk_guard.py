"""A bound on Torch-Pruning's dependency walk, so that a walk that never settles becomes a refusal.

``DependencyGraph.get_pruning_group`` follows a root's channels from node to node and stops where
it meets a (node, pruning function, indices) it already holds. Where channels are followed
through operations whose channel axis is not dim 1 (MaxViT's attention over ``[B, G, P, D]``
tokens: a chunk of the last axis, reshapes into heads, matrix products), its index mappings
produce new, ever larger index lists on each round of a cycle, and the walk runs until memory
runs out (over 10 GiB after ten minutes on ``maxvit_t``).

A walk that settles adds each (node, pruning function) a few times at most: once on every
torchvision model that prunes (measured on DenseNet-121, GoogLeNet, ShuffleNetV2, RegNetY,
EfficientNet-B0, ResNeXt-50, MobileNetV3, SqueezeNet), up to 8 times on the property tests' random
networks, where one tensor reaches a node along several paths with different indices (a layer run
twice, a concatenation of depthwise-carried channels; 700 draws). What tells a walk that does not
settle apart is that its indices leave the layers they land on: on MaxViT a ``Linear`` of 64
inputs is handed input 703 within 2.5 s. An index out of range alone is not enough (where the
surgery leaves a channel shuffle unmapped, ShuffleNetV2's walk hands a conv of 48 inputs index 71,
and those channels are kept anyway), so :func:`bounded_walk` stops a walk that has handed a layer
an index out of its range *and* comes back to one (node, pruning function) :data:`REVISITS` times,
or that comes back :data:`BACKSTOP` times in any case, and raises :class:`WalkDiverged` naming the
node it keeps returning to.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import Node
from torch_pruning.dependency import group as tp_group

REVISITS = 8  # with an index out of range: the most a settling walk was measured to need
BACKSTOP = 256  # in any case


class WalkDiverged(Exception):
    """The dependency walk keeps returning to ``node`` with new channel indices."""

    def __init__(self, node: Node):
        super().__init__(node)
        self.node = node


def _out_of_range(graph: tp.DependencyGraph, dep, idxs) -> bool:
    """Whether ``idxs`` name a channel beyond the layer ``dep`` prunes (layers with a pruner only:
    Torch-Pruning's own operation nodes do not say their width)."""
    module = dep.target.module
    if not isinstance(module, nn.Module) or not idxs:
        return False
    pruner = graph.get_pruner_of_module(module)
    if pruner is None:
        return False
    out = dep.handler == pruner.prune_out_channels
    width = pruner.get_out_channels(module) if out else pruner.get_in_channels(module)
    return width is not None and max(i.idx for i in idxs) >= width


@contextmanager
def bounded_walk(graph: tp.DependencyGraph) -> Iterator[None]:
    """Within the block, a pruning group of ``graph`` that does not settle (see the module
    docstring) raises :class:`WalkDiverged`. Torch-Pruning's ``Group.add_dep`` is wrapped for the
    block only."""
    original = tp_group.Group.add_dep

    def add_dep(group, dep, idxs):
        original(group, dep, idxs)
        state = group.__dict__.setdefault("_pytest_prune_walk", {"counts": Counter(), "astray": False})
        state["astray"] = state["astray"] or _out_of_range(graph, dep, idxs)
        key = (id(dep.target), dep.handler)
        state["counts"][key] += 1
        count = state["counts"][key]
        if count >= BACKSTOP or (state["astray"] and count >= REVISITS):
            raise WalkDiverged(dep.target)

    tp_group.Group.add_dep = add_dep
    try:
        yield
    finally:
        tp_group.Group.add_dep = original
