"""``--prune-report DIR``: results.csv and results.json, one row per measured method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from .run import MethodResult

# The columns promised to users come first, in this order; any further measurements follow.
LEADING_COLUMNS = [
    "model",
    "criterion",
    "ratio",
    "recovery",
    "top1_dense",
    "top1_pruned",
    "macs_dense",
    "macs_pruned",
    "params_dense",
    "params_pruned",
    "score_seconds",
]


def results_frame(results: Sequence[MethodResult]) -> pd.DataFrame:
    frame = pd.DataFrame([r.row() for r in results])
    if frame.empty:
        return pd.DataFrame(columns=LEADING_COLUMNS)
    rest = [c for c in frame.columns if c not in LEADING_COLUMNS]
    return frame[LEADING_COLUMNS + rest]


def write_report(results: Sequence[MethodResult], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    frame = results_frame(results)
    csv_path = directory / "results.csv"
    json_path = directory / "results.json"
    frame.to_csv(csv_path, index=False)
    # NaN is not JSON: missing measurements become null.
    records = json.loads(frame.to_json(orient="records"))
    json_path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return [csv_path, json_path]
