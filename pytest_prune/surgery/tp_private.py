"""Every Torch-Pruning name we use that its public API does not offer, in one place.

The surgery extends Torch-Pruning where it cannot follow channels on its own (the option-A
shortcut, splits mapped per part, concatenations, unflattening views): those index mappings take
and return Torch-Pruning's private ``_HybridIndex`` (a channel index with the root channel it came
from), and the split and concatenation mappings read its private op classes. Importing them here
only means a Torch-Pruning release that renames them breaks one import, with this file to mend.
"""

from __future__ import annotations

from torch_pruning import ops as _ops
from torch_pruning._helpers import _HybridIndex as HybridIndex
from torch_pruning.dependency import index_mapping

ConcatOp = _ops._ConcatOp
SplitOp = _ops._SplitOp

__all__ = ["ConcatOp", "HybridIndex", "SplitOp", "index_mapping"]
