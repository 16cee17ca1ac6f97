"""``package.module:callable`` spec strings → the callable, with errors that say how to fix them."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .errors import SpecError


def import_callable(spec: str, option: str, returns: str) -> Callable[..., Any]:
    """The callable named by ``spec``; ``option`` and ``returns`` word the error messages."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(
            f"{option} {spec!r}: cannot import module {module_name!r} ({exc}); make it importable "
            "(install it, or add its folder to pytest's pythonpath)"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise SpecError(
            f"{option} {spec!r}: module {module_name} has no callable named {attribute!r}; "
            f"define a function there that returns {returns}"
        )
    return target
