"""Fixtures of the surgery tests (helpers live in surgery_cases.py)."""

from __future__ import annotations

from typing import Callable

import pytest
from surgery_cases import ZooCase, make_case


@pytest.fixture(scope="module")
def zoo_case() -> Callable[..., ZooCase]:
    """``zoo_case(spec, size)``: built, calibrated and traced once per test module."""
    cache: dict[tuple[str, int | None], ZooCase] = {}

    def get(spec: str, size: int | None = None) -> ZooCase:
        if (spec, size) not in cache:
            cache[(spec, size)] = make_case(spec, size)
        return cache[(spec, size)]

    return get
