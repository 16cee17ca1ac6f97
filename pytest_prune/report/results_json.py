"""``results.json``: the run's verdicts, baseline values and measurements for CI bots.

The layout is documented in ``docs/results-json.md`` and given as a JSON Schema in
``docs/results.schema.json``; :data:`SCHEMA_VERSION` is the ``schema_version`` the file carries and
changes whenever a field is renamed, removed or changes meaning (adding a field does not).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .verdicts import clean_row, counts, failures_first, run_status

SCHEMA_VERSION = 1


def _finite_or_null(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def results_document(
    frame: pd.DataFrame, verdicts: Sequence[dict], model: str, sensitivity: Sequence[dict] = ()
) -> dict[str, Any]:
    """The whole file as a dict: status and counts first, then the verdicts (failures first), then
    one record per measured method (the rows of results.csv), then -- only when a sensitivity
    analysis ran -- its table, one record per (criterion, recovery, group, fraction): the rows of
    sensitivity.csv (:func:`pytest_prune.sensitivity.files.sensitivity_rows`)."""
    # pandas writes NaN as null: missing measurements become null, not the invalid JSON token NaN
    methods = json.loads(frame.to_json(orient="records")) if len(frame) else []
    rows = [clean_row(r) for r in failures_first(verdicts)]
    document = {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "status": run_status(rows),
        "counts": counts(rows),
        "verdicts": rows,
        "methods": methods,
    }
    if sensitivity:  # an added key, absent when nothing was analysed: version 1 readers are unaffected
        document["sensitivity"] = [{k: _finite_or_null(v) for k, v in row.items()} for row in sensitivity]
    return document


def write_results_json(
    path: Path, frame: pd.DataFrame, verdicts: Sequence[dict], model: str, sensitivity: Sequence[dict] = ()
) -> Path:
    document = results_document(frame, verdicts, model, sensitivity)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
