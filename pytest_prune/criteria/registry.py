"""Criteria by name: ``register`` adds a class, ``get_criterion`` builds one from its name."""

from __future__ import annotations

from ..errors import SpecError
from ..registry import Registry
from .base import Criterion

_CRITERIA: Registry[type[Criterion]] = Registry("criterion")
register = _CRITERIA.register
known_criteria = _CRITERIA.names
criterion_classes = _CRITERIA.classes


def get_criterion(name: str) -> Criterion:
    cls = _CRITERIA.lookup(name.strip())
    if cls is None:
        raise SpecError(
            f"unknown pruning criterion {name!r}; known criteria: {', '.join(known_criteria())} "
            "(check --prune-criteria)"
        )
    return cls()
