"""Recovery steps by name: ``register`` adds a class, ``get_step`` builds one from ``name[:N]``."""

from __future__ import annotations

from ..errors import SpecError
from ..registry import Registry
from .base import RecoveryStep

_STEPS: Registry[type[RecoveryStep]] = Registry("recovery step")
register = _STEPS.register
known_steps = _STEPS.names
step_classes = _STEPS.classes


def _usage(cls: type[RecoveryStep]) -> str:
    if cls.argument is None:
        return cls.name
    return f"{cls.name}:{cls.argument.upper()}" if cls.argument_required else f"{cls.name}[:{cls.argument.upper()}]"


def get_step(text: str) -> RecoveryStep:
    """One step from its spec, ``name`` or ``name:N``."""
    name, colon, argument = text.strip().partition(":")
    cls = _STEPS.lookup(name.strip().lower())
    if cls is None:
        known = ", ".join(_usage(c) for _, c in sorted(_STEPS.classes().items()))
        raise SpecError(
            f"unknown recovery step {name.strip()!r}; known steps: {known}; combine them with '+', "
            "e.g. lsq+bn (check --prune-recovery)"
        )
    return cls.from_argument(argument if colon else None)
