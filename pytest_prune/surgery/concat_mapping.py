"""Channel offsets for the concatenations Torch-Pruning gives up on.

Torch-Pruning maps channels through ``torch.cat`` with offsets it rebuilds on every
``get_pruning_group``, but first it checks the concat's width against the width inferred
downstream, and that inference walks straight through a flatten: ``cat → pool → flatten → linear``
compares 10 channels with 160 features, and the concat is left without offsets. Every input then
lands at offset 0, so channels of different inputs are tied together.

For those concats we install the offsets ourselves, read from the concat's sizes at call time
(Torch-Pruning's concat pruner updates the sizes when channels go). Concats whose inputs cannot be
sized, or that join a tensor the tracer cannot see (a buffer, a constant), are reported as opaque:
no channel may be removed through them.
"""

from __future__ import annotations

import torch_pruning as tp
from torch_pruning.dependency import Node, shape_infer

from .tp_private import ConcatOp, HybridIndex

class _ConcatSegment:
    """Input ``k`` of a concat: its channel ``i`` is concat channel ``offset(k) + i``."""

    def __init__(self, concat: ConcatOp, k: int, into_concat: bool):
        self.concat = concat
        self.k = k
        self.into_concat = into_concat

    def __call__(self, idxs: list[HybridIndex]) -> list[HybridIndex]:
        sizes = self.concat.concat_sizes
        start = sum(sizes[: self.k])
        end = start + sizes[self.k]
        if self.into_concat:
            return [HybridIndex(idx=i.idx + start, root_idx=i.root_idx) for i in idxs]
        return [
            HybridIndex(idx=i.idx - start, root_idx=i.root_idx)
            for i in idxs
            if start <= i.idx < end
        ]


def _channel_concat(node: Node) -> bool:
    return node.type == tp.ops.OPTYPE.CONCAT and getattr(node.grad_fn, "_saved_dim", None) == 1


def _first_unclaimed(deps, target: Node, claimed: list) -> object | None:
    """The first edge to ``target`` not yet given a segment (a tensor may be concatenated twice)."""
    for dep in deps:
        if dep.target is target and not any(dep is c for c in claimed):
            claimed.append(dep)
            return dep
    return None


def complete_concat_mappings(graph: tp.DependencyGraph) -> dict[Node, str]:
    """Give offsets to the channel concats Torch-Pruning left without; return the opaque ones."""
    opaque: dict[Node, str] = {}
    for node in graph.module2node.values():
        if not _channel_concat(node):
            continue
        # one next function per joined tensor; the graph has a node only for those it can follow
        if len(node.grad_fn.next_functions) != len(node.inputs):
            opaque[node] = "it joins a tensor the tracer cannot see (a buffer or a constant)"
            continue
        if node.module.offsets is not None:
            continue  # Torch-Pruning mapped it
        sizes = node.module.concat_sizes or [
            shape_infer.infer_channels_between(graph, n, node) for n in node.inputs
        ]
        if any(s is None for s in sizes):
            opaque[node] = "the tracer cannot tell how many channels each joined tensor has"
            continue
        node.module.concat_sizes = list(sizes)
        into, out_of = [], []
        for k, source in enumerate(node.inputs):
            forward = _first_unclaimed(source.dependencies, node, into)
            backward = _first_unclaimed(node.dependencies, source, out_of)
            forward.index_mapping[1] = _ConcatSegment(node.module, k, into_concat=True)
            backward.index_mapping[1] = _ConcatSegment(node.module, k, into_concat=False)
    return opaque
