"""Fixtures of the criteria tests: one trained TinyNet with planted channels per session."""

from __future__ import annotations

import pytest
import torch

from planted_net import Trained, train_planted


@pytest.fixture(scope="session")
def trained_tiny() -> Trained:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_planted()
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def tiny(trained_tiny: Trained) -> Trained:
    """A fresh copy per test: tests may plant more channels."""
    return trained_tiny.copy()
