"""Name → class registries: the extension points (criteria, recovery steps) share this one."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes registered by their ``name`` attribute; a name may be registered only once."""

    def __init__(self, kind: str):
        self.kind = kind  # "criterion", "recovery step": words the errors
        self._classes: dict[str, T] = {}

    def register(self, cls: T) -> T:
        name = cls.name  # type: ignore[attr-defined]
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"{self.kind} name {name!r} is registered twice")
        self._classes[name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def classes(self) -> dict[str, T]:
        return dict(self._classes)

    def lookup(self, name: str) -> T | None:
        return self._classes.get(name)
