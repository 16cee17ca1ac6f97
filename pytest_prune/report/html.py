"""A static HTML report of a run: verdicts, figures and results, openable from disk without a server.

The page opens with the verdict table (:mod:`pytest_prune.report.verdicts`: one row per gate,
failures first and highlighted), then the figures, then the results table.

:func:`write_html_report` writes ``index.html`` and one PNG per figure into one folder; the page
refers to the PNGs by bare file names, so the folder can be moved, zipped or opened from a CI
artifact as it is. Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global
backend switch), so writing a report never changes the plotting state of the process.

What is drawn, and from what (a figure whose inputs are missing is skipped, and the page says why):

* **top-1 vs MACs kept**, one line per (model, criterion, recovery): results columns ``model``,
  ``criterion``, ``ratio``, ``top1_pruned``, ``macs_dense``, ``macs_pruned``; the dense model is
  marked at MACs kept 1 (column ``top1_dense``), and each compared method's baseline (from the
  verdicts' ``top1`` and ``macs_reduction`` baselines) as a hollow marker joined to its measured point;
* **attribution maps, dense vs every compressed method**: ``figures["attribution"]`` = ``{"dense":
  N×H×W, "pruned": {method: N×H×W} (or one N×H×W stack), "images": N×C×H×W or N×H×W (optional),
  "label": str (optional)}``, arrays or CPU tensors; one row per stack, one column per image;
  images in [0, 1] are shown as they are, others stretched to [0, 1]; at most
  :data:`MAX_ATTRIBUTION_IMAGES` images are shown;
* **filters removed per layer**: ``figures["filters_removed"]`` = ``{layer: removed}`` or
  ``{layer: (removed, total)}``, of the method ``figures["filters_removed_method"]`` (optional);
* **colour-selective share, pruned vs kept**, per criterion (mean over the rows): columns
  ``colour_selective_pruned`` and ``colour_selective_kept``; the threshold comes from a
  ``colour_threshold`` column or ``figures["colour_threshold"]`` and is printed with the figure.

The report reads results and verdict rows; it knows nothing of how they were measured or judged.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .verdicts import baseline_points, verdict_table_html
from .sensitivity_map import NoTable, sensitivity_heat_map

MAX_ATTRIBUTION_IMAGES = 6
TOP1_VS_MACS_COLUMNS = ("model", "criterion", "ratio", "top1_pruned", "macs_dense", "macs_pruned")
COLOUR_COLUMNS = ("colour_selective_pruned", "colour_selective_kept")


@dataclass(frozen=True)
class _Section:
    title: str
    image: str | None  # file name beside index.html, None when skipped
    note: str


class _Skip(Exception):
    """A figure cannot be drawn from the inputs given; the message goes on the page."""


def _new_figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout=layout)
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
    baselines = baseline_points(figures.get("verdicts") or [])
    keys = [c for c in ("model", "criterion", "recovery") if c in frame.columns]
    marked_baseline = False
    for key, rows in frame.groupby(keys, sort=True):
        kept = (rows["macs_pruned"] / rows["macs_dense"]).to_numpy(dtype=float)
        order = np.argsort(kept, kind="stable")
        top1 = rows["top1_pruned"].to_numpy(dtype=float)
        name = " · ".join(str(k) for k in key if k not in ("", "none"))
        (line,) = axes.plot(kept[order], top1[order], marker="o", label=name)
        methods = rows["method"].tolist() if "method" in rows.columns else []
        for method, x, y in zip(methods, kept, top1):
            if method in baselines:  # where the baseline stood, joined to where the method is now
                bx, by = baselines[method]
                axes.plot([bx, x], [by, y], linestyle=":", color=line.get_color(), linewidth=1)
                axes.plot([bx], [by], marker="o", markerfacecolor="none", color=line.get_color(),
                          linestyle="none", label=None if marked_baseline else "baseline (hollow)")
                marked_baseline = True
    if "top1_dense" in frame.columns and frame["top1_dense"].notna().any():
        for model, rows in frame.groupby("model", sort=True):
            axes.plot([1.0], [float(rows["top1_dense"].iloc[0])], marker="*", markersize=14, color="black",
                      linestyle="none", label=f"dense {model}")
    axes.set_xlabel("MACs kept (pruned / dense)")
    axes.set_ylabel("top-1 of the pruned model")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    note = "One point per pruning ratio; further right is less pruned; the star is the dense model."
    if baselines:
        note += " Hollow markers: each method's baseline, joined to its measured point by a dotted line."
    return figure, note


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
    low, high = float(image.min()), float(image.max())
    if 0.0 <= low and high <= 1.0:  # raw pixels: show them as they are
        scaled = image
    else:  # anything else (e.g. normalised inputs): stretch to [0, 1] for display only
        scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return scaled, ("gray" if scaled.ndim == 2 else None)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def _row_of(images) -> np.ndarray:
    """Images of one shape side by side, a white (1.0) column between neighbours."""
    images = list(images)
    gap = np.ones(images[0].shape[:1] + (1,) + images[0].shape[2:])
    parts = [part for image in images for part in (image, gap)][:-1]
    return np.concatenate(parts, axis=1)


def _retention_labels(frame: pd.DataFrame) -> dict[str, str]:
    """``{method: "method (ρ 0.83)"}`` where the results give the method's attribution retention."""
    if "method" not in frame.columns or "attribution_spearman" not in frame.columns:
        return {}
    return {
        str(m): f"{m} (ρ {float(rho):.2f})"
        for m, rho in zip(frame["method"], frame["attribution_spearman"])
        if rho is not None and not (isinstance(rho, float) and math.isnan(rho))
    }


def _attribution(frame: pd.DataFrame, figures: Mapping[str, Any]):
    spec = figures.get("attribution")
    if not spec or "dense" not in spec or "pruned" not in spec:
        raise _Skip('no attribution maps were given (figures["attribution"] with "dense" and "pruned")')
    dense = np.asarray(spec["dense"], dtype=float)
    pruned = spec["pruned"] if isinstance(spec["pruned"], Mapping) else {"pruned": spec["pruned"]}
    if not pruned:
        raise _Skip("no compressed method's attribution maps were given")
    stacks = {name: np.asarray(maps, dtype=float) for name, maps in pruned.items()}
    for name, maps in stacks.items():
        if maps.shape != dense.shape or dense.ndim != 3:
            raise _Skip(f"dense maps {dense.shape} and {name} maps {maps.shape} are not N×H×W stacks of one shape")
    images = np.asarray(spec["images"], dtype=float) if spec.get("images") is not None else None
    columns = min(len(dense), MAX_ATTRIBUTION_IMAGES)
    if columns == 0:
        raise _Skip("the attribution maps are empty")
    labels = _retention_labels(frame)
    rows = [] if images is None else [("image", _row_of(_as_rgb(_display_image(images[c])[0]) for c in range(columns)))]
    from matplotlib import colormaps

    inferno = colormaps["inferno"]
    for name, stack in [("dense", dense)] + [(labels.get(n, n), maps) for n, maps in stacks.items()]:
        # each map scaled to its own maximum, as the caption says; coloured here, so that every
        # row is one RGB band of one image
        rows.append((name, _row_of(inferno(np.clip(stack[c] / (float(stack[c].max()) or 1.0), 0.0, 1.0))[..., :3]
                                   for c in range(columns))))
    # All rows in one image on one axes, labelled by y ticks: an axes per row took a second to
    # build and draw once every method of a run had its row (28 rows), a grid per image seconds.
    if rows[0][0] == "image" and rows[0][1].shape != rows[1][1].shape:  # inputs of another size: maps only
        rows = rows[1:]
    band = rows[0][1].shape[0]
    gap = np.ones((1,) + rows[0][1].shape[1:])
    picture = np.concatenate([part for _, row in rows for part in (row, gap)][:-1], axis=0)
    width, height = 1.3 * columns + 1.8, 1.3 * len(rows) + 0.2
    figure = _new_figure(width, height, layout=None)
    axes = figure.add_axes((1.7 / width, 0.1 / height, 1 - 1.8 / width, 1 - 0.2 / height))
    axes.imshow(picture, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([r * (band + 1) + (band - 1) / 2 for r in range(len(rows))], [name for name, _ in rows],
                    fontsize="small")
    label = spec.get("label")
    note = ("One row per model (the dense one, then every compressed method), one column per image; "
            "each map is scaled to its own maximum (brighter = more attributed).")
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
    method = figures.get("filters_removed_method")
    of = f" by {method}" if method else ""
    return figure, f"Filters removed per layer{of}" + (" (grey: filters the layer had)." if has_totals else ".")


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


def _sensitivity(frame: pd.DataFrame, figures: Mapping[str, Any]):
    try:
        return sensitivity_heat_map(_new_figure, figures)
    except NoTable as why:
        raise _Skip(str(why)) from None


_FIGURES: tuple[tuple[str, str, Callable], ...] = (
    ("Top-1 vs MACs kept", "top1_vs_macs.png", _top1_vs_macs),
    ("Attribution maps: the dense model and every compressed method", "attribution_maps.png", _attribution),
    ("Filters removed per layer", "filters_removed.png", _filters_removed),
    ("Colour-selective share: pruned vs kept", "colour_selective_share.png", _colour_share),
    ("Sensitivity of each channel group", "sensitivity.png", _sensitivity),
)


def _format_cell(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return str(value)


# Inline, so the page needs nothing but its folder (no CDN, no network). Failed gates are red,
# erroring ones orange: the colours the Chromium test looks for in a screenshot.
FAILED_BACKGROUND = "#f4b6b6"
ERROR_BACKGROUND = "#f9d29d"
_STYLE = (
    "<style>body{font-family:sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.5em;text-align:right}"
    "table.verdicts td,table.verdicts th{text-align:left;vertical-align:top;font-size:0.9em}"
    f"tr.failed{{background:{FAILED_BACKGROUND};font-weight:bold}}tr.error{{background:{ERROR_BACKGROUND}}}"
    "tr.written{background:#eef3fb}.headline{font-size:1.2em;padding:0.4em}"
    f".headline.failed{{background:{FAILED_BACKGROUND}}}.headline.passed{{background:#cdebd0}}"
    "img{max-width:100%}.skipped{color:#a04000}</style>"
)


def _page(title: str, sections: list[_Section], frame: pd.DataFrame, verdicts: Sequence[dict]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        _STYLE,
        f"</head><body><h1>{html.escape(title)}</h1>",
        verdict_table_html(verdicts),
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
    verdicts: Sequence[dict] = (),
) -> Path:
    """Write ``index.html`` and its PNGs into ``directory`` (created if needed); return the page's path.

    ``verdicts`` are the gates' verdict rows (:mod:`pytest_prune.report.verdicts`): the page opens
    with them, failures first. A figure that cannot be drawn is skipped with a note on the page, and
    a PNG of that name left by an earlier report is removed, so the folder always matches the page.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    # the top-1-vs-MACs plot marks the baselines, which the verdicts carry
    figures = {**(figures or {}), "verdicts": list(verdicts)}
    sections = []
    for heading, file_name, draw in _FIGURES:
        target = folder / file_name
        try:
            figure, note = draw(results_frame, figures)
        except _Skip as skip:
            target.unlink(missing_ok=True)
            sections.append(_Section(heading, None, str(skip)))
            continue
        # zlib level 1: the attribution page of a 27-method run compressed for 1.5 s at the
        # default level 6, for files a third smaller
        figure.savefig(target, dpi=100, pil_kwargs={"compress_level": 1})
        sections.append(_Section(heading, file_name, note))
    page = folder / "index.html"
    page.write_text(_page(title, sections, results_frame, verdicts), encoding="utf-8")
    return page
