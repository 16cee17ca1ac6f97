"""Import what writing a report needs, ahead of time (a pytest-xdist controller does it while its
last workers finish; see ``pytest_prune.plugin.pytest_testnodedown``). Torch-free: the controller
never imports torch."""

from __future__ import annotations

import importlib

REPORT_MODULES = ("pandas", "matplotlib.figure", "matplotlib.backends.backend_agg", "pytest_prune.report")


def preload_report_modules() -> None:
    """Import :data:`REPORT_MODULES`; a failure is left for the report itself to raise and explain."""
    for name in REPORT_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the report's own import says what is wrong, in the main thread
            return
