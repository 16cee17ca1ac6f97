"""The hypothesis settings profiles, ``ci`` and ``dev``, without importing torch: the repository's
root ``conftest.py`` loads one in every pytest run, gates included, where importing the strategies
(and so torch) would delay each pytest-xdist worker's start by seconds."""

from __future__ import annotations

import os

from hypothesis import settings


def register_profiles() -> None:
    """Register the ``ci`` and ``dev`` settings profiles (load one with ``settings.load_profile``).

    ``ci``: 200 examples, derandomized and without the example database, so that every CI run
    tests the same examples and a failure prints a reproducible blob. ``dev``: 25 random examples,
    with the local database replaying past failures first. Both: no deadline (the first example
    pays for torch's lazy initialisation), health checks on.
    """
    settings.register_profile(
        "ci",
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=(),
    )
    settings.register_profile("dev", max_examples=25, deadline=None)


def selected_profile() -> str:
    """The profile to load: ``$HYPOTHESIS_PROFILE``, else ``ci`` if ``$CI`` is set, else ``dev``."""
    chosen = os.environ.get("HYPOTHESIS_PROFILE")
    if chosen:
        return chosen
    return "ci" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "dev"
