"""A static HTML report of a run: results table and figures, openable from disk without a server.

:func:`write_html_report` writes ``index.html`` and one PNG per figure into one folder; the page
refers to the PNGs by bare file names, so the folder can be moved, zipped or opened from a CI
artifact as it is. Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global
backend switch), so writing a report never changes the plotting state of the process.

What is drawn, and from what (a figure whose inputs are missing is skipped, and the page says why):

* **top-1 vs MACs kept**, one line per (model, criterion): results columns ``model``,
  ``criterion``, ``ratio``, ``top1_pruned``, ``macs_dense``, ``macs_pruned``;
* **attribution maps, dense vs pruned**: ``figures["attribution"]`` = ``{"dense": N×H×W,
  "pruned": N×H×W, "images": N×C×H×W or N×H×W (optional), "label": str (optional)}``, arrays
  or CPU tensors; images in [0, 1] are shown as they are, others stretched to [0, 1]; at most
  :data:`MAX_ATTRIBUTION_ROWS` images are shown;
* **filters removed per layer**: ``figures["filters_removed"]`` = ``{layer: removed}`` or
  ``{layer: (removed, total)}``;
* **colour-selective share, pruned vs kept**, per criterion (mean over the rows): columns
  ``colour_selective_pruned`` and ``colour_selective_kept``; the threshold comes from a
  ``colour_threshold`` column or ``figures["colour_threshold"]`` and is printed with the figure.

The report reads results; it knows nothing of how they were measured or of baselines.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

MAX_ATTRIBUTION_ROWS = 6
TOP1_VS_MACS_COLUMNS = ("model", "criterion", "ratio", "top1_pruned", "macs_dense", "macs_pruned")
COLOUR_COLUMNS = ("colour_selective_pruned", "colour_selective_kept")


@dataclass(frozen=True)
class _Section:
    title: str
    image: str | None  # file name beside index.html, None when skipped
    note: str


class _Skip(Exception):
    """A figure cannot be drawn from the inputs given; the message goes on the page."""


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _missing_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise _Skip(f"the results have no column {', '.join(missing)}")
    if frame.empty:
        raise _Skip("the results table is empty")


def _top1_vs_macs(frame: pd.DataFrame, figures: Mapping[str, Any]):
    _missing_columns(frame, TOP1_VS_MACS_COLUMNS)
    figure = _new_figure(6.5, 4.2)
    axes = figure.add_subplot()
    for (model, criterion), rows in frame.groupby(["model", "criterion"], sort=True):
        kept = (rows["macs_pruned"] / rows["macs_dense"]).to_numpy(dtype=float)
        order = np.argsort(kept, kind="stable")
        top1 = rows["top1_pruned"].to_numpy(dtype=float)
        axes.plot(kept[order], top1[order], marker="o", label=f"{model} · {criterion}")
    axes.set_xlabel("MACs kept (pruned / dense)")
    axes.set_ylabel("top-1 of the pruned model")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure, "One point per pruning ratio; further right is less pruned."


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
    low, high = float(image.min()), float(image.max())
    if 0.0 <= low and high <= 1.0:  # raw pixels: show them as they are
        scaled = image
    else:  # anything else (e.g. normalised inputs): stretch to [0, 1] for display only
        scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return scaled, ("gray" if scaled.ndim == 2 else None)


def _attribution(frame: pd.DataFrame, figures: Mapping[str, Any]):
    spec = figures.get("attribution")
    if not spec or "dense" not in spec or "pruned" not in spec:
        raise _Skip('no attribution maps were given (figures["attribution"] with "dense" and "pruned")')
    dense, pruned = np.asarray(spec["dense"], dtype=float), np.asarray(spec["pruned"], dtype=float)
    if dense.shape != pruned.shape or dense.ndim != 3:
        raise _Skip(f"dense maps {dense.shape} and pruned maps {pruned.shape} are not two N×H×W stacks of one shape")
    images = np.asarray(spec["images"], dtype=float) if spec.get("images") is not None else None
    rows = min(len(dense), MAX_ATTRIBUTION_ROWS)
    if rows == 0:
        raise _Skip("the attribution maps are empty")
    panels = [("image", images)] if images is not None else []
    panels += [("dense", dense), ("pruned", pruned)]
    figure = _new_figure(2.2 * len(panels), 2.2 * rows)
    grid = figure.subplots(rows, len(panels), squeeze=False)
    for r in range(rows):
        for c, (name, stack) in enumerate(panels):
            axes = grid[r][c]
            if name == "image":
                shown, cmap = _display_image(stack[r])
                axes.imshow(shown, cmap=cmap)
            else:
                axes.imshow(stack[r], cmap="inferno", vmin=0.0, vmax=float(stack[r].max()) or 1.0)
            axes.set_xticks([])
            axes.set_yticks([])
            if r == 0:
                axes.set_title(name)
    label = spec.get("label")
    note = "Each map is scaled to its own maximum (brighter = more attributed)."
    return figure, f"{label}. {note}" if label else note


def _filters_removed(frame: pd.DataFrame, figures: Mapping[str, Any]):
    removed = figures.get("filters_removed")
    if not removed:
        raise _Skip('no per-layer counts were given (figures["filters_removed"])')
    layers = list(removed)
    counts = [v[0] if isinstance(v, (tuple, list)) else v for v in removed.values()]
    totals = [v[1] if isinstance(v, (tuple, list)) else None for v in removed.values()]
    figure = _new_figure(max(4.0, 0.5 * len(layers) + 2.0), 3.8)
    axes = figure.add_subplot()
    positions = np.arange(len(layers))
    has_totals = all(t is not None for t in totals)
    if has_totals:
        axes.bar(positions, totals, color="#dddddd", label="filters before pruning")
    axes.bar(positions, counts, color="#c0392b", label="removed")
    axes.set_xticks(positions, layers, rotation=60, ha="right", fontsize="small")
    axes.set_ylabel("filters")
    axes.legend(fontsize="small")
    return figure, "Filters removed per layer" + (" (grey: filters the layer had)." if has_totals else ".")


def colour_threshold_text(frame: pd.DataFrame, figures: Mapping[str, Any]) -> str:
    """The threshold the colour shares used, as the page states it."""
    if "colour_threshold" in frame.columns:
        values = sorted({float(v) for v in frame["colour_threshold"].dropna()})
        if values:
            return "CSI > " + " / ".join(f"{v:g}" for v in values)
    if figures.get("colour_threshold") is not None:
        return f"CSI > {float(figures['colour_threshold']):g}"
    return "threshold not recorded"


def _colour_share(frame: pd.DataFrame, figures: Mapping[str, Any]):
    _missing_columns(frame, ("criterion",) + COLOUR_COLUMNS)
    means = frame.groupby("criterion", sort=True)[list(COLOUR_COLUMNS)].mean()
    if means.isna().all().all():
        raise _Skip("the colour-selective shares are all missing")
    threshold = colour_threshold_text(frame, figures)
    figure = _new_figure(max(4.0, 1.2 * len(means) + 2.0), 3.8)
    axes = figure.add_subplot()
    positions = np.arange(len(means))
    axes.bar(positions - 0.2, means["colour_selective_pruned"], width=0.4, color="#c0392b", label="pruned filters")
    axes.bar(positions + 0.2, means["colour_selective_kept"], width=0.4, color="#2980b9", label="kept filters")
    axes.set_xticks(positions, list(means.index))
    axes.set_ylim(0, 1)
    axes.set_ylabel("share colour-selective")
    axes.set_title(f"colour-selective ({threshold})", fontsize="medium")
    axes.legend(fontsize="small")
    return figure, f"Share of filters that are colour-selective ({threshold}), mean over the rows of each criterion."


_FIGURES: tuple[tuple[str, str, Callable], ...] = (
    ("Top-1 vs MACs kept", "top1_vs_macs.png", _top1_vs_macs),
    ("Attribution maps: dense vs pruned", "attribution_maps.png", _attribution),
    ("Filters removed per layer", "filters_removed.png", _filters_removed),
    ("Colour-selective share: pruned vs kept", "colour_selective_share.png", _colour_share),
)


def _format_cell(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _page(title: str, sections: list[_Section], frame: pd.DataFrame) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.5em;text-align:right}"
        "img{max-width:100%}.skipped{color:#a04000}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        if section.image is not None:
            parts.append(f'<img src="{html.escape(section.image)}" alt="{html.escape(section.title)}">')
            parts.append(f"<p>{html.escape(section.note)}</p>")
        else:
            parts.append(f'<p class="skipped">Skipped: {html.escape(section.note)}.</p>')
        parts.append("</section>")
    parts.append("<section><h2>Results</h2>")
    if frame.empty:
        parts.append("<p>No results.</p>")
    else:
        parts.append(frame.to_html(index=False, formatters={c: _format_cell for c in frame.columns}, border=0))
    parts.append("</section></body></html>")
    return "\n".join(parts) + "\n"


def write_html_report(
    directory: str | Path,
    results_frame: pd.DataFrame,
    figures: Mapping[str, Any] | None = None,
    *,
    title: str = "pytest-prune report",
) -> Path:
    """Write ``index.html`` and its PNGs into ``directory`` (created if needed); return the page's path.

    A figure that cannot be drawn is skipped with a note on the page, and a PNG of that name left by
    an earlier report is removed, so the folder always matches the page.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    figures = figures or {}
    sections = []
    for heading, file_name, draw in _FIGURES:
        target = folder / file_name
        try:
            figure, note = draw(results_frame, figures)
        except _Skip as skip:
            target.unlink(missing_ok=True)
            sections.append(_Section(heading, None, str(skip)))
            continue
        figure.savefig(target, dpi=100)
        sections.append(_Section(heading, file_name, note))
    page = folder / "index.html"
    page.write_text(_page(title, sections, results_frame), encoding="utf-8")
    return page
