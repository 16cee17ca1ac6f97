"""What the plugin keeps for one pytest session: the run, the options, the outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from .options import GateOptions

if TYPE_CHECKING:  # the plugin imports this module in every pytest run: no torch at import
    from ..pipeline.run import PruneRun
    from ..pipeline.settings import RunSettings


@dataclass
class GateState:
    # None on a pytest-xdist controller, which measures nothing (the workers do) and so never
    # imports torch: it merges the workers' rows, prints the summary and writes the report
    run: PruneRun | None
    options: GateOptions
    settings: RunSettings | None = None  # the run's settings (the run's own where there is a run)
    # method id → check → "passed" / "failed" / "written" / "error"
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # under pytest-xdist, on the controller: what the workers measured (results.csv rows)
    remote_rows: list[dict] = field(default_factory=list)
    remote_figures: list[dict] = field(default_factory=list)  # and the report figures they drew
    data_spec: str | None = None  # the data the rows were measured on (for the summary's last line)
    # method id → the error its measurement raised: its other items fail with it, not re-running
    failures: dict[str, BaseException] = field(default_factory=dict)
    listing_only: bool = False  # --collect-only: list the gates, load no data
    # method id → check → what the report's verdict table shows beside the outcome: measured,
    # baseline, tolerance, what changed since the baseline, the failure message
    verdicts: dict[str, dict[str, dict]] = field(default_factory=dict)

    def record(self, method: str, check: str, outcome: str) -> None:
        self.outcomes.setdefault(method, {})[check] = outcome

    def describe(self, method: str, check: str, **fields) -> None:
        """Add to one gate's verdict-table entry (plain JSON-able values, sent across workers)."""
        self.verdicts.setdefault(method, {}).setdefault(check, {}).update(fields)

    def rows(self) -> list[dict]:
        """Every measured method as a results.csv row: this process's and the workers'."""
        return ([r.row() for r in self.run.results()] if self.run is not None else []) + self.remote_rows

    @property
    def model_name(self) -> str:
        """The gates' model name (``lenet5``), also where no run was built."""
        if self.run is not None:
            return self.run.name
        return next((r["model"] for r in self.remote_rows), self.settings.name if self.settings else None) or self.options.model

    def run_settings(self) -> RunSettings:
        return self.run.settings if self.run is not None else self.settings

    def worker_payload(self) -> dict:
        """What a pytest-xdist worker sends the controller (plain JSON-able values)."""
        return {"rows": self.rows(), "outcomes": self.outcomes, "verdicts": self.verdicts, "notes": self.notes,
                "data_spec": self.run.data_spec if self.run.results() else None}

    def merge(self, payload: dict) -> None:
        """On the controller: take in one worker's :meth:`worker_payload`."""
        self.remote_rows.extend(payload.get("rows", []))
        if payload.get("figures"):
            self.remote_figures.append(payload["figures"])
        for method, checks in payload.get("outcomes", {}).items():
            self.outcomes.setdefault(method, {}).update(checks)
        for method, checks in payload.get("verdicts", {}).items():
            for check, fields in checks.items():
                self.describe(method, check, **fields)
        for line in payload.get("notes", []):
            self.note(line)
        self.data_spec = self.data_spec or payload.get("data_spec")

    def note(self, line: str) -> None:
        """A line for the end of the summary, once however many items report it."""
        if line not in self.notes:
            self.notes.append(line)


GATE_STATE = pytest.StashKey[GateState]()
