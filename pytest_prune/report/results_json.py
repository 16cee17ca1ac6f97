"""``results.json``: the run's verdicts, baseline values and measurements for CI bots.

The layout is documented in ``docs/results-json.md`` and given as a JSON Schema in
``docs/results.schema.json``; :data:`SCHEMA_VERSION` is the ``schema_version`` the file carries and
changes whenever a field is renamed, removed or changes meaning (adding a field does not).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .verdicts import clean_row, counts, failures_first, run_status

SCHEMA_VERSION = 1


def results_document(frame: pd.DataFrame, verdicts: Sequence[dict], model: str) -> dict[str, Any]:
    """The whole file as a dict: status and counts first, then the verdicts (failures first), then
    one record per measured method (the rows of results.csv)."""
    # pandas writes NaN as null: missing measurements become null, not the invalid JSON token NaN
    methods = json.loads(frame.to_json(orient="records")) if len(frame) else []
    rows = [clean_row(r) for r in failures_first(verdicts)]
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "status": run_status(rows),
        "counts": counts(rows),
        "verdicts": rows,
        "methods": methods,
    }


def write_results_json(path: Path, frame: pd.DataFrame, verdicts: Sequence[dict], model: str) -> Path:
    document = results_document(frame, verdicts, model)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
