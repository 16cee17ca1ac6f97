"""Shared set-up of the data tests: a user's data factories, as an importable module of their own."""

import itertools
import textwrap

import pytest

_names = itertools.count()


@pytest.fixture
def factories_module(tmp_path, monkeypatch):
    """``write(source, prefix)`` → the name of a fresh, importable module holding ``source``: a new
    name each time, so that no test sees another's module state."""

    def write(source: str, prefix: str) -> str:
        name = f"{prefix}_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(tmp_path)
        return name

    return write
