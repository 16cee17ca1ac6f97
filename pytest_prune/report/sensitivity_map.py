"""The report's heat map of a sensitivity analysis (:mod:`pytest_prune.sensitivity`): how much
calibration top-1 each channel group loses when it alone is pruned at each fraction.

Drawn from ``figures["sensitivity"]``: the rows of ``sensitivity.csv`` (``criterion``, ``group``,
``fraction``, ``top1``, ``dense_top1``, ``macs_saved``), one heat map per criterion side by side.
Groups are rows in the order the analysis measured them (forward order), fractions are columns;
the colour is the top-1 drop against the dense model, each cell is labelled with the top-1 it
kept, and the group's label carries the MACs it saves at the largest fraction measured.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

# the columns of sensitivity.csv
COLUMNS = ("model", "criterion", "recovery", "images", "dense_top1", "group", "fraction", "removed", "size",
           "top1", "loss", "macs_saved", "params_saved")


class NoTable(Exception):
    """Nothing to draw; the message says why (the page shows it in place of the figure)."""


def sensitivity_heat_map(new_figure, figures: Mapping[str, Any]):
    """(figure, caption) of the analysis in ``figures["sensitivity"]``; ``new_figure(w, h)`` makes
    the empty figure (the page's own factory, so every figure is drawn the same way)."""
    rows = figures.get("sensitivity")
    if not rows:
        raise NoTable("no sensitivity analysis ran (it runs for --prune-allocation sensitivity, the default for macs:/params: budgets)")
    table = pd.DataFrame(rows)
    criteria = list(dict.fromkeys(table["criterion"]))
    groups = list(dict.fromkeys(table["group"]))
    fractions = sorted(table["fraction"].unique())
    figure = new_figure(2.0 + 0.9 * len(fractions) * len(criteria) + 1.5 * len(criteria), 1.0 + 0.32 * len(groups))
    grid = figure.subplots(1, len(criteria), squeeze=False)[0]
    for axes, criterion in zip(grid, criteria):
        own = table[table["criterion"] == criterion]
        top1 = own.pivot_table(index="group", columns="fraction", values="top1").reindex(index=groups, columns=fractions)
        drop = own["dense_top1"].iloc[0] - top1
        image = axes.imshow(drop.to_numpy(dtype=float), cmap="Reds", vmin=0.0, vmax=max(float(np.nanmax(drop.to_numpy())), 1e-6), aspect="auto")
        for i in range(len(groups)):
            for j in range(len(fractions)):
                value = top1.iat[i, j]
                if not np.isnan(value):
                    axes.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize="x-small")
        saved = own[own["fraction"] == fractions[-1]].set_index("group")["macs_saved"].reindex(groups)
        axes.set_yticks(range(len(groups)), [f"{g} (−{_count(s)} MACs)" for g, s in zip(groups, saved)], fontsize="x-small")
        axes.set_xticks(range(len(fractions)), [f"{f:g}" for f in fractions])
        axes.set_xlabel("fraction of the group pruned")
        axes.set_title(criterion, fontsize="medium")
        figure.colorbar(image, ax=axes, label="top-1 drop (calibration)")
    caption = (
        "Each channel group pruned alone, at each fraction, on calibration images: the colour is the "
        f"top-1 drop against the dense model, the label the top-1 kept; beside each group the MACs per "
        f"sample it saves at {fractions[-1]:g} (white: a fraction the group's width cannot reach apart "
        "from another). The table is sensitivity.csv."
    )
    return figure, caption


def _count(value: float) -> str:
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def write_sensitivity_rows(directory: Path, rows: list[dict]) -> list[Path]:
    """sensitivity.csv and sensitivity.json of ``rows`` (:func:`sensitivity_rows`), or none when empty."""
    if not rows:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = directory / "sensitivity.csv", directory / "sensitivity.json"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return [csv_path, json_path]
