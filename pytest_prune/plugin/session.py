"""What the plugin keeps for one pytest session: the run, the options, the outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from .options import GateOptions

if TYPE_CHECKING:  # the plugin imports this module in every pytest run: no torch at import
    from ..pipeline.run import PruneRun


@dataclass
class GateState:
    run: PruneRun
    options: GateOptions
    # method id → check → "passed" / "failed" / "written" / "error"
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # under pytest-xdist, on the controller: what the workers measured (results.csv rows)
    remote_rows: list[dict] = field(default_factory=list)
    data_spec: str | None = None  # the data the rows were measured on (for the summary's last line)
    # method id → the error its measurement raised: its other items fail with it, not re-running
    failures: dict[str, BaseException] = field(default_factory=dict)
    listing_only: bool = False  # --collect-only: list the gates, load no data

    def record(self, method: str, check: str, outcome: str) -> None:
        self.outcomes.setdefault(method, {})[check] = outcome

    def rows(self) -> list[dict]:
        """Every measured method as a results.csv row: this process's and the workers'."""
        return [r.row() for r in self.run.results()] + self.remote_rows

    def worker_payload(self) -> dict:
        """What a pytest-xdist worker sends the controller (plain JSON-able values)."""
        return {"rows": self.rows(), "outcomes": self.outcomes, "notes": self.notes,
                "data_spec": self.run.data_spec if self.run.results() else None}

    def merge(self, payload: dict) -> None:
        """On the controller: take in one worker's :meth:`worker_payload`."""
        self.remote_rows.extend(payload.get("rows", []))
        for method, checks in payload.get("outcomes", {}).items():
            self.outcomes.setdefault(method, {}).update(checks)
        for line in payload.get("notes", []):
            self.note(line)
        self.data_spec = self.data_spec or payload.get("data_spec")

    def note(self, line: str) -> None:
        """A line for the end of the summary, once however many items report it."""
        if line not in self.notes:
            self.notes.append(line)


GATE_STATE = pytest.StashKey[GateState]()
