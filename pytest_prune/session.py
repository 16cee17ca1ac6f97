"""What the plugin keeps for one pytest session: the run, the options, the outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from .options import GateOptions

if TYPE_CHECKING:  # the plugin imports this module in every pytest run: no torch at import
    from .run import PruneRun


@dataclass
class GateState:
    run: PruneRun
    options: GateOptions
    # method id → check → "passed" / "failed" / "written" / "error"
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self, method: str, check: str, outcome: str) -> None:
        self.outcomes.setdefault(method, {})[check] = outcome

    def note(self, line: str) -> None:
        """A line for the end of the summary, once however many items report it."""
        if line not in self.notes:
            self.notes.append(line)


GATE_STATE = pytest.StashKey[GateState]()
