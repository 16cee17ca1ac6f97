"""Operations that cut or rearrange the channel dimension: splits, slices and channel reshapes.

* ``chunk`` / ``split`` into equal parts (ShuffleNetV2's ``x.chunk(2, dim=1)``) compute their
  sizes from the width at run time, so a pruned model splits at the new half as long as every
  part loses the same number of channels: :func:`split_partners` ties the same offset of every
  part into one bundle (removed together, as for a grouped conv). The tie also makes the pruned
  split exact whichever order Torch-Pruning lists the parts in.
* A split into unequal parts, a slice along channels, and a reshape that splits or merges the
  channel dimension (the ``view(b, g, c // g, h, w)`` of a channel shuffle) cannot be followed
  channel by channel: the channels through them are kept (:func:`kept_cuts`), with a note.
  Torch-Pruning's own index mapping for such reshapes divides by a channel count it infers as
  zero; :func:`record_channel_reshapes` finds them during the trace and the guard installed by
  :func:`guard_reshape_mapping` leaves them unmapped.
* A reshape of N×F features into N×C×H×W (a decoder's ``view`` after a linear layer) is an
  unflatten: :func:`install_unflatten_mappings` ties each channel to its H·W features, which
  Torch-Pruning (following reshapes of 1-D and 4-D inputs only) does not, so that the channels
  through it are found; they are kept, since ``view(-1, 8, 2, 2)`` names the count.

Torch-Pruning maps a split's parts to its consumers by the order it lists them in, which need not
be the order of the parts (and its list may hold more entries than parts, which crashes). So
:func:`install_split_mappings` gives every edge out of a channel split the parts that edge
carries, read from autograd (a split's outputs are numbered, and each consumer's inputs say which
output they are).

A split whose sizes are literals in forward (``x.split(16, 1)``) looks the same to autograd as
``chunk``: the pruned model would split at the old offset. The surgery-equivalence check (pruned
against the masked dense model) is what catches that.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch_pruning as tp
from torch.overrides import TorchFunctionMode
from torch_pruning.dependency import Node

from .tp_private import HybridIndex, SplitOp, index_mapping
_GRAPH_ATTRIBUTE = "_pytest_prune_channel_reshapes"
_RESHAPES = {"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0"}
_CUTS = (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.SLICE)


def _changes_channels(before: torch.Size, after: torch.Size) -> bool:
    """Whether a reshape from ``before`` to ``after`` regroups dim 1 other than by flattening
    (N×C×H×W → N×CHW) or its inverse, which Torch-Pruning maps itself."""
    if len(before) < 2 or len(after) < 2 or before[1] == after[1]:
        return False
    flatten = len(after) == 2 and after[1] == math.prod(before[1:])
    unflatten = len(before) == 2 and before[1] == math.prod(after[1:])
    return not (flatten or unflatten)


def _unflatten_stride(before: torch.Size, after: torch.Size) -> int | None:
    """Features per channel when a reshape turns N×F features into N×C×H×W (a decoder's
    ``view`` after a linear layer): F = C·H·W."""
    if len(before) == 2 and len(after) > 2 and before[1] == math.prod(after[1:]) and after[1] != before[1]:
        return before[1] // after[1]
    return None


class record_channel_reshapes(TorchFunctionMode):
    """While active, collects the autograd nodes of reshapes that regroup the channel dim, and
    of reshapes that unflatten features into channels (Torch-Pruning maps neither: it follows
    reshapes of 1-D and 4-D inputs only)."""

    def __init__(self) -> None:
        super().__init__()
        self.grad_fns: set[Any] = set()
        self.unflattens: dict[Any, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        grad_fn = getattr(out, "grad_fn", None)
        source = args[0] if args else None
        if (
            grad_fn is not None
            and isinstance(source, torch.Tensor)
            and grad_fn.name() in _RESHAPES
        ):
            stride = _unflatten_stride(source.shape, out.shape)
            if stride is not None:
                self.unflattens[grad_fn] = stride
            elif _changes_channels(source.shape, out.shape):
                self.grad_fns.add(grad_fn)
        return out


def attach(graph: tp.DependencyGraph, reshapes: record_channel_reshapes) -> None:
    """Let the guard know which reshapes of ``graph`` to leave alone (before it is built)."""
    setattr(graph, _GRAPH_ATTRIBUTE, reshapes)


def guard_reshape_mapping() -> None:
    """Install, once, a guard around Torch-Pruning's reshape index mapping that skips the
    reshapes recorded for the graph being mapped; every other reshape is mapped as before."""
    original = index_mapping.update_reshape_index_mapping
    if getattr(original, "_pytest_prune_guard", False):
        return

    def guarded(graph, node):
        recorded = getattr(graph, _GRAPH_ATTRIBUTE, None)
        if recorded is not None and (node.grad_fn in recorded.grad_fns or node.grad_fn in recorded.unflattens):
            return None
        return original(graph, node)

    guarded._pytest_prune_guard = True
    index_mapping.update_reshape_index_mapping = guarded


def _split_sizes(node: Node) -> list[int] | None:
    """The part sizes of a split along channels, None for other nodes."""
    grad_fn = node.grad_fn
    if node.type != tp.ops.OPTYPE.SPLIT or getattr(grad_fn, "_saved_dim", None) != 1:
        return None
    if hasattr(grad_fn, "_saved_split_sizes"):
        return list(grad_fn._saved_split_sizes)
    width, size = grad_fn._saved_self_sym_sizes[1], grad_fn._saved_split_size
    return [min(size, width - start) for start in range(0, width, size)]


def split_partners(node: Node, index: int) -> list[int]:
    """For a split into equal parts along channels: the same offset in every other part."""
    sizes = _split_sizes(node)
    if not sizes or len(sizes) < 2 or len(set(sizes)) != 1:
        return []
    per_part = sizes[0]
    offset = index % per_part
    return [k * per_part + offset for k in range(len(sizes)) if k * per_part + offset != index]


def kept_cuts(graph: tp.DependencyGraph) -> dict[Node, str]:
    """The nodes that cut or regroup channels in a way no channel can be followed through → why
    the channels through them are kept."""
    recorded = getattr(graph, _GRAPH_ATTRIBUTE, None)
    reshapes = recorded.grad_fns if recorded is not None else set()
    kept: dict[Node, str] = {}
    for node in graph.module2node.values():
        if node.grad_fn in reshapes:
            kept[node] = "a reshape regroups the channel dimension (a channel shuffle)"
        elif recorded is not None and node.grad_fn in recorded.unflattens:
            # view(-1, 8, 2, 2) names the channel count: a pruned model could not reshape
            kept[node] = "a reshape turns features into channels at a count fixed in forward"
        elif node.type in _CUTS and getattr(node.grad_fn, "_saved_dim", None) == 1:
            sizes = _split_sizes(node)
            if sizes is None or len(set(sizes)) != 1:
                kept[node] = "it cuts the channel dimension at unequal sizes (split or slice)"
    return kept


class _PartOffset:
    """The index mapping between a split along channels and a consumer of its parts ``parts``
    (sizes read at call time, so that it follows Torch-Pruning's split pruner as channels go)."""

    def __init__(self, split: SplitOp, parts: list[int], into_part: bool):
        self.split = split
        self.parts = parts
        self.into_part = into_part

    def __call__(self, idxs: list[HybridIndex]) -> list[HybridIndex]:
        sizes = self.split.split_sizes
        spans = [(sum(sizes[:k]), sizes[k]) for k in self.parts]
        if self.into_part:
            return [
                HybridIndex(idx=i.idx - start, root_idx=i.root_idx)
                for i in idxs
                for start, size in spans
                if start <= i.idx < start + size
            ]
        return [
            HybridIndex(idx=start + i.idx, root_idx=i.root_idx)
            for i in idxs
            for start, size in spans
            if i.idx < size
        ]


def _parts_read(split: Node, consumer: Node) -> list[int]:
    """Which parts of ``split`` the operation ``consumer`` reads: autograd numbers a split's
    outputs, and each consumer's inputs name the output they are (looked up through one
    operation Torch-Pruning does not list, such as a view)."""
    inputs = list(getattr(consumer.grad_fn, "next_functions", ()))
    inputs += [deeper for fn, _ in inputs if fn is not None and fn is not split.grad_fn
               for deeper in fn.next_functions]
    return sorted({number for fn, number in inputs if fn is split.grad_fn})


def install_split_mappings(graph: tp.DependencyGraph) -> None:
    """Replace Torch-Pruning's index mappings through every split along channels by
    :class:`_PartOffset`, each edge knowing the parts it carries; clearing the split's offsets
    stops Torch-Pruning from rebuilding its own before each group."""
    for node in graph.module2node.values():
        sizes = _split_sizes(node)
        if sizes is None:
            continue
        node.module.split_sizes = list(sizes)
        node.module.offsets = None
        for out in node.outputs:
            parts = _parts_read(node, out) or list(range(len(sizes)))
            for dep in node.dependencies:
                if dep.target is out:
                    dep.index_mapping[0] = _PartOffset(node.module, parts, into_part=True)
            for dep in out.dependencies:
                if dep.target is node:
                    dep.index_mapping[0] = _PartOffset(node.module, parts, into_part=False)


class _Unflatten:
    """Index mapping across an unflatten: feature f is channel f // stride; channel c is
    features c·stride … c·stride + stride - 1."""

    def __init__(self, stride: int, into_channels: bool):
        self.stride = stride
        self.into_channels = into_channels

    def __call__(self, idxs: list[HybridIndex]) -> list[HybridIndex]:
        if self.into_channels:
            return list({HybridIndex(idx=i.idx // self.stride, root_idx=i.root_idx) for i in idxs})
        return [
            HybridIndex(idx=i.idx * self.stride + k, root_idx=i.root_idx)
            for i in idxs
            for k in range(self.stride)
        ]


def install_unflatten_mappings(graph: tp.DependencyGraph) -> None:
    """Map channels across the unflattening reshapes recorded during the trace."""
    recorded = getattr(graph, _GRAPH_ATTRIBUTE, None)
    if recorded is None:
        return
    for node in graph.module2node.values():
        stride = recorded.unflattens.get(node.grad_fn)
        if stride is None:
            continue
        for out in node.outputs:
            for dep in node.dependencies:
                if dep.target is out:
                    dep.index_mapping[0] = _Unflatten(stride, into_channels=True)
            for dep in out.dependencies:
                if dep.target is node:
                    dep.index_mapping[0] = _Unflatten(stride, into_channels=False)
