"""Fixtures of the criteria tests: one trained TinyNet with planted channels per session."""

from __future__ import annotations

import pytest

from planted_net import Trained, train_planted

from pytest_prune.modes import torch_threads


@pytest.fixture(scope="session")
def trained_tiny() -> Trained:
    with torch_threads(1):
        return train_planted()


@pytest.fixture
def tiny(trained_tiny: Trained) -> Trained:
    """A fresh copy per test: tests may plant more channels."""
    return trained_tiny.copy()
