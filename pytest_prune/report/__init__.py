"""``--prune-report DIR``: results.csv, results.json and index.html.

results.csv has one row per measured method; results.json (:mod:`.results_json`, schema in
``docs/results-json.md``) adds the gates' verdicts and baseline values; index.html opens with the
verdict table, failures first (:mod:`.verdicts`), then the figures (:mod:`.html`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import pandas as pd

from .html import write_html_report
from .results_json import write_results_json
from .sensitivity_map import write_sensitivity_rows

if TYPE_CHECKING:  # a pytest-xdist controller writes the report from rows: no torch for it
    from ..pipeline.results import MethodResult
    from ..pipeline.run import PruneRun

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
    """The page's per-method figures: attribution maps of every compressed method beside the dense
    model's; filters removed per layer for the first method that removed channels."""
    compressed = [r for r in results if r.pruned_model is not None]
    if not compressed:
        return {}
    from ..measure.attribution import attribution_maps, predicted_classes  # torch, captum

    images = run.data.evaluation_images(REPORT_IMAGES).to(run.settings.device)
    method = run.settings.attribution_method
    targets = predicted_classes(run.info.model, images)  # every map explains the dense decision
    dense = attribution_maps(run.info.model, images, targets, method, normalise=run.data.normalise)
    pruned = {
        r.method: attribution_maps(r.pruned_model, images, targets, method, normalise=run.data.normalise).cpu().numpy()
        for r in compressed
    }
    figures = {
        "attribution": {
            "dense": dense.cpu().numpy(),
            "pruned": pruned,
            "images": run.data.denormalise(images).clamp(0, 1).cpu().numpy(),
            "label": f"{method.replace('_', ' ')} maps of the dense {run.name} and of every compressed method",
        },
        "colour_threshold": run.settings.colour_threshold,
    }
    shown = next((r for r in compressed if r.plan is not None), None)
    if shown is not None:
        figures["filters_removed"] = {g.root: (len(shown.plan.remove.get(g.name, ())), g.size) for g in run.groups}
        figures["filters_removed_method"] = shown.method
    return figures


def figures_payload(figures: dict) -> dict:
    """:func:`report_figures` as plain lists and numbers: what a pytest-xdist worker sends the
    controller for the page (the models stay on the workers; their maps travel)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return list(value)
        return value.tolist() if hasattr(value, "tolist") else value

    return plain(figures)


def merged_figures(payloads: Sequence[dict], order: Callable[[str], int]) -> dict:
    """On the controller: one page's figures from the workers' :func:`figures_payload`: the dense
    maps and images (the same on every worker), every method's maps in gate order (``order``: a
    method id's position), and the filters removed by the first method in gate order, as a
    single process would draw them."""
    # two workers may each have analysed one criterion (for two budgets): its rows once, from every
    # worker (one without attribution maps still sends its table: results.json carries it)
    analysed = {(r["criterion"], r["recovery"], r["group"], r["fraction"]): r
                for p in payloads for r in p.get("sensitivity", [])}
    payloads = [p for p in payloads if p.get("attribution")]
    if not payloads:
        return {"sensitivity": list(analysed.values())} if analysed else {}
    first = min(payloads, key=lambda p: min(map(order, p["attribution"]["pruned"])))
    pruned = {m: maps for p in payloads for m, maps in p["attribution"]["pruned"].items()}
    figures = {**first, "attribution": {**first["attribution"], "pruned": dict(sorted(pruned.items(), key=lambda kv: order(kv[0])))}}
    if analysed:
        figures["sensitivity"] = list(analysed.values())
    removed = [p for p in payloads if "filters_removed" in p]
    if removed:
        shown = min(removed, key=lambda p: order(p["filters_removed_method"]))
        figures["filters_removed"] = shown["filters_removed"]
        figures["filters_removed_method"] = shown["filters_removed_method"]
    return figures


def write_report(
    run: PruneRun | None, directory: Path, rows: Sequence[dict] | None = None, verdicts: Sequence[dict] = (),
    figures: dict | None = None,
) -> list[Path]:
    """results.csv, results.json and index.html; ``rows`` (a pytest-xdist controller's, merged from
    its workers; its ``run`` is None) replace this process's results, and ``figures`` (the
    workers', :func:`merged_figures`) the figures drawn from them. ``verdicts``: the gates'
    verdict rows (:mod:`.verdicts`), which both results.json and the page open with."""
    directory.mkdir(parents=True, exist_ok=True)
    results = run.results() if run is not None else []
    frame = results_frame(rows if rows is not None else results)
    csv_path = directory / "results.csv"
    frame.to_csv(csv_path, index=False)
    name = frame["model"].iloc[0] if len(frame) else (run.name if run is not None else "")
    if figures is None:
        figures = report_figures(run, results) if rows is None and run is not None else {}
    if run is not None and run.sensitivity_tables:  # a single process: its own tables (workers send rows)
        from ..sensitivity.files import sensitivity_rows

        figures = {**figures, "sensitivity": sensitivity_rows(run.sensitivity_tables, run.name)}
    sensitivity = figures.get("sensitivity") or []  # results.json's optional "sensitivity" array
    json_path = write_results_json(directory / "results.json", frame, verdicts, name, sensitivity)
    paths = write_sensitivity_rows(directory, sensitivity)
    html_path = write_html_report(
        directory, frame, figures, title=f"pytest-prune report: {name}", verdicts=verdicts
    )
    return [csv_path, json_path, html_path, *paths]
