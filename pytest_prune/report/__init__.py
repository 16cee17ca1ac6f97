"""``--prune-report DIR``: results.csv, results.json and index.html, one row per measured method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..measure.attribution import attribution_maps, predicted_classes
from ..pipeline.results import MethodResult
from ..pipeline.run import PruneRun
from .html import write_html_report

REPORT_IMAGES = 4  # images whose attribution maps the page shows, dense beside compressed

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


def results_frame(results: Sequence[MethodResult | dict]) -> pd.DataFrame:
    """One row per method; ``results`` are results or their rows (from pytest-xdist workers)."""
    frame = pd.DataFrame([r if isinstance(r, dict) else r.row() for r in results])
    if frame.empty:
        return pd.DataFrame(columns=LEADING_COLUMNS)
    rest = [c for c in frame.columns if c not in LEADING_COLUMNS]
    return frame[LEADING_COLUMNS + rest]


def report_figures(run: PruneRun, results: Sequence[MethodResult]) -> dict:
    """The page's per-method figures, drawn for the first method that removed channels."""
    shown = next((r for r in results if r.plan is not None and r.pruned_model is not None), None)
    if shown is None:
        return {}
    images = run.data.evaluation_images(REPORT_IMAGES).to(run.settings.device)
    method = run.settings.attribution_method
    targets = predicted_classes(run.info.model, images)  # both explain the dense decision
    dense = attribution_maps(run.info.model, images, targets, method, normalise=run.data.normalise)
    pruned = attribution_maps(shown.pruned_model, images, targets, method, normalise=run.data.normalise)
    removed = {
        g.root: (len(shown.plan.remove.get(g.name, ())), g.size) for g in run.groups
    }
    return {
        "attribution": {
            "dense": dense.cpu().numpy(),
            "pruned": pruned.cpu().numpy(),
            "images": run.data.denormalise(images).clamp(0, 1).cpu().numpy(),
            "label": f"{method.replace('_', ' ')} maps, dense {run.name} and {shown.method}",
        },
        "filters_removed": removed,
        "colour_threshold": run.settings.colour_threshold,
    }


def write_report(run: PruneRun, directory: Path, rows: Sequence[dict] | None = None) -> list[Path]:
    """results.csv, results.json and index.html; ``rows`` (a pytest-xdist controller's, merged from
    its workers) replace this process's results, and the page then has no per-method figures,
    since the models stayed on the workers."""
    directory.mkdir(parents=True, exist_ok=True)
    results = run.results()
    frame = results_frame(rows if rows is not None else results)
    csv_path = directory / "results.csv"
    json_path = directory / "results.json"
    frame.to_csv(csv_path, index=False)
    # NaN is not JSON: missing measurements become null.
    records = json.loads(frame.to_json(orient="records"))
    json_path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    figures = report_figures(run, results) if rows is None else {}
    name = frame["model"].iloc[0] if len(frame) else ""
    html_path = write_html_report(directory, frame, figures, title=f"pytest-prune report: {name}")
    return [csv_path, json_path, html_path]
