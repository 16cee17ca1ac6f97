"""Fixtures of the surgery tests (helpers live in surgery_cases.py)."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
import torch
from surgery_cases import ZooCase, make_case


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread while a surgery test module runs, restored afterwards.

    The models here are small and the cores shared: with two threads, OpenMP's spin-waiting on a
    busy machine burned about 4x the CPU time (100 s instead of 25 s for this folder).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo_case() -> Callable[..., ZooCase]:
    """``zoo_case(spec, size)``: built, calibrated and traced once per test module."""
    cache: dict[tuple[str, int | None], ZooCase] = {}

    def get(spec: str, size: int | None = None) -> ZooCase:
        if (spec, size) not in cache:
            cache[(spec, size)] = make_case(spec, size)
        return cache[(spec, size)]

    return get
