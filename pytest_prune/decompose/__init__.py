"""Tensor decomposition of conv layers: Tucker-2 (Kim et al., ICLR 2016), as in Gong et al. (2020).

The data flow, one module each:

    ranks.py  (fraction | energy | vbmf.py: EVBMF)  → Tucker2Ranks (R_out, R_in) per conv
    tucker.py (tensorly partial_tucker)             → 1x1 → k×k → 1x1 nn.Sequential per conv
    apply.py  (forward hook, measure.macs counter)  → decomposed copy of the model + DecompositionReport

Only this package imports tensorly (in ``tucker.py``).
"""

from .apply import (
    HIGH_DIMENSIONAL_WEIGHTS,
    DecompositionReport,
    LayerDecomposition,
    decompose_model,
    is_high_dimensional,
)
from .errors import DecompositionError
from .ranks import RANK_RULES, rank_rule, ranks_by_energy, ranks_by_fraction, ranks_by_vbmf
from .tucker import Tucker2Ranks, decompose_conv, tucker2_cascade
from .vbmf import VBMFDetails, evbmf

__all__ = [
    "HIGH_DIMENSIONAL_WEIGHTS",
    "RANK_RULES",
    "DecompositionError",
    "DecompositionReport",
    "LayerDecomposition",
    "Tucker2Ranks",
    "VBMFDetails",
    "decompose_conv",
    "decompose_model",
    "evbmf",
    "is_high_dimensional",
    "rank_rule",
    "ranks_by_energy",
    "ranks_by_fraction",
    "ranks_by_vbmf",
    "tucker2_cascade",
]
