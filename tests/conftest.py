"""Shared test setup: one cache for the embedded model across in-process pytest runs."""

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session", autouse=True)
def shared_prune_cache(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point PRUNE_CACHE_DIR at one folder so that pytester runs reuse the trained LeNet-5."""
    if "PRUNE_CACHE_DIR" not in os.environ:
        cache = getattr(pytestconfig, "cache", None)  # absent under -p no:cacheprovider
        if cache is not None:
            folder = Path(cache.mkdir("pytest-prune"))
        else:
            folder = tmp_path_factory.mktemp("pytest-prune-cache")
        os.environ["PRUNE_CACHE_DIR"] = str(folder)
    return Path(os.environ["PRUNE_CACHE_DIR"])
