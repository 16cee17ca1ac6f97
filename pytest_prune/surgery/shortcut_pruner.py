"""Teaching Torch-Pruning the option-A shortcut (:class:`~pytest_prune.layers.PadShortcut`).

The shortcut places input channel ``i`` at output channel ``positions[i]`` and fills the other
output channels with zeros. Torch-Pruning would treat an unknown module as element-wise (input
channel ``i`` is output channel ``i``), which ties the wrong channels together across a stage
transition. Here the shortcut gets its own pruner and its own index maps:

* the shortcut's index space, for Torch-Pruning, is its **output** space: ``prune_in_channels`` is
  ``prune_out_channels`` (that identity is how Torch-Pruning couples a layer's input and output);
* on the edge from the shortcut's input into the shortcut, input channel ``i`` becomes output
  position ``positions[i]``;
* on the edge from the shortcut back to its input, output position ``p`` becomes the input channel
  placed there, and zero-padded positions drop out (they are tied to nothing upstream);
* pruning removes output positions, with the input channels placed there, and renumbers
  ``positions``.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch_pruning as tp

from ..layers import PadShortcut
from .tp_private import HybridIndex

IndexMap = Callable[[list[HybridIndex]], list[HybridIndex]]


class PadShortcutPruner(tp.pruner.BasePruningFunc):
    """Removes output positions of a :class:`PadShortcut`, and the input channels placed there."""

    TARGET_MODULES = PadShortcut

    def prune_out_channels(self, layer: PadShortcut, idxs: Sequence[int]) -> PadShortcut:
        gone = set(int(i) for i in idxs)
        kept = [p for p in range(layer.out_channels) if p not in gone]
        renumber = {old: new for new, old in enumerate(kept)}
        layer.positions = [renumber[p] for p in layer.positions if p not in gone]
        layer.out_channels = len(kept)
        return layer

    # One function for both sides is how Torch-Pruning couples input and output channels.
    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: PadShortcut) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: PadShortcut) -> int:
        # Shape inference (concat/split/flatten sizes) asks for the real width of the input tensor.
        return layer.in_channels


class _InputToOutput:
    """Input channel ``i`` of the shortcut → its output position ``positions[i]``."""

    def __init__(self, shortcut: PadShortcut):
        self.shortcut = shortcut

    def __call__(self, idxs: list[HybridIndex]) -> list[HybridIndex]:
        # Read ``positions`` at call time: it is renumbered every time the shortcut is pruned.
        positions = self.shortcut.positions
        return [HybridIndex(idx=positions[i.idx], root_idx=i.root_idx) for i in idxs]


class _OutputToInput:
    """Output position ``p`` → the input channel placed there; padded positions map to nothing."""

    def __init__(self, shortcut: PadShortcut):
        self.shortcut = shortcut

    def __call__(self, idxs: list[HybridIndex]) -> list[HybridIndex]:
        source = {p: i for i, p in enumerate(self.shortcut.positions)}
        return [
            HybridIndex(idx=source[i.idx], root_idx=i.root_idx) for i in idxs if i.idx in source
        ]


class _MappingWithShortcut:
    """A dependency's ``index_mapping`` that keeps the shortcut's map out of Torch-Pruning's slots.

    Torch-Pruning stores two mapping slots per edge and ``update_index_mapping`` (run inside every
    ``get_pruning_group``) rewrites them for concat/split/reshape/slice neighbours. A map stored
    in a slot could be overwritten, so ours lives beside the slots and is applied on the
    shortcut's side of the edge: after the slots on edges into the shortcut, before them on edges
    out of it.
    """

    def __init__(self, slots: list, shortcut_map: IndexMap, shortcut_side_first: bool):
        self._slots = list(slots)
        self._shortcut_map = shortcut_map
        self._first = shortcut_side_first

    def __getitem__(self, k: int):
        return self._slots[k]

    def __setitem__(self, k: int, mapping) -> None:
        self._slots[k] = mapping

    def __iter__(self) -> Iterator:
        if self._first:
            return iter([self._shortcut_map, *self._slots])
        return iter([*self._slots, self._shortcut_map])


def install_shortcut_mappings(graph: tp.DependencyGraph) -> None:
    """Attach the channel maps of every traced :class:`PadShortcut` to the edges beside it."""
    for module, node in graph.module2node.items():
        if not isinstance(module, PadShortcut):
            continue
        for source in node.inputs:
            for dep in source.dependencies:
                if dep.target is node:  # source → shortcut: source's index space is the input's
                    dep.index_mapping = _MappingWithShortcut(
                        dep.index_mapping, _InputToOutput(module), shortcut_side_first=False
                    )
            for dep in node.dependencies:
                if dep.target is source:  # shortcut → source
                    dep.index_mapping = _MappingWithShortcut(
                        dep.index_mapping, _OutputToInput(module), shortcut_side_first=True
                    )
