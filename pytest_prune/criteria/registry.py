"""Criteria by name: ``register`` adds a class, ``get_criterion`` builds one from its name."""

from __future__ import annotations

from typing import TypeVar

from ..errors import SpecError
from .base import Criterion

_REGISTRY: dict[str, type[Criterion]] = {}
C = TypeVar("C", bound=type[Criterion])


def register(cls: C) -> C:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"criterion name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def known_criteria() -> list[str]:
    return sorted(_REGISTRY)


def criterion_classes() -> dict[str, type[Criterion]]:
    return dict(_REGISTRY)


def get_criterion(name: str) -> Criterion:
    cls = _REGISTRY.get(name.strip())
    if cls is None:
        raise SpecError(
            f"unknown pruning criterion {name!r}; known criteria: {', '.join(known_criteria())} "
            "(check --prune-criteria)"
        )
    return cls()
