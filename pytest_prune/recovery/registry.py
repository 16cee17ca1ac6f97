"""Recovery steps by name: ``register`` adds a class, ``get_step`` builds one from ``name[:N]``."""

from __future__ import annotations

from typing import TypeVar

from ..errors import SpecError
from .base import RecoveryStep

_REGISTRY: dict[str, type[RecoveryStep]] = {}
S = TypeVar("S", bound=type[RecoveryStep])


def register(cls: S) -> S:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"recovery step name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def known_steps() -> list[str]:
    return sorted(_REGISTRY)


def step_classes() -> dict[str, type[RecoveryStep]]:
    return dict(_REGISTRY)


def _usage(cls: type[RecoveryStep]) -> str:
    if cls.argument is None:
        return cls.name
    return f"{cls.name}:{cls.argument.upper()}" if cls.argument_required else f"{cls.name}[:{cls.argument.upper()}]"


def get_step(text: str) -> RecoveryStep:
    """One step from its spec, ``name`` or ``name:N``."""
    name, colon, argument = text.strip().partition(":")
    cls = _REGISTRY.get(name.strip().lower())
    if cls is None:
        known = ", ".join(_usage(c) for _, c in sorted(_REGISTRY.items()))
        raise SpecError(
            f"unknown recovery step {name.strip()!r}; known steps: {known}; combine them with '+', "
            "e.g. lsq+bn (check --prune-recovery)"
        )
    return cls.from_argument(argument if colon else None)
