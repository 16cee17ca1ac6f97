"""sensitivity.csv and sensitivity.json: every table a run measured, one row per (group, fraction),
written next to results.csv by the report (:mod:`pytest_prune.report.sensitivity_map`, which also
draws them), from the plain rows this module makes of a run's tables."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .analysis import SensitivityTable


def sensitivity_rows(tables: Iterable[SensitivityTable], model: str = "") -> list[dict]:
    """The rows of sensitivity.csv: plain values (a pytest-xdist worker sends them to the controller)."""
    return [{"model": model, **row} for table in tables for row in table.rows()]


def write_tables(directory: Path, tables: Iterable[SensitivityTable], model: str = "") -> list[Path]:
    """The two files, or none when there is no table."""
    from ..report.sensitivity_map import write_sensitivity_rows  # plain rows: the report writes them

    return write_sensitivity_rows(directory, sensitivity_rows(tables, model))
