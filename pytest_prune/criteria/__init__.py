"""Pruning criteria, one module each, registered by name.

Import a criterion module here to make its name available to ``--prune-criteria``.
"""

from . import magnitude, random_control  # noqa: F401  (registration side effect)
from . import attribution, bn_error, car, cpmc, recal_error, statistics, taylor  # noqa: F401  (registration side effect)
from . import recon  # noqa: F401  (registration side effect)
from .base import Criterion, ScoringContext, Scores
from .registry import criterion_classes, get_criterion, known_criteria, register

__all__ = [
    "Criterion",
    "ScoringContext",
    "Scores",
    "criterion_classes",
    "get_criterion",
    "known_criteria",
    "register",
]
