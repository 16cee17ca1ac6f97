"""The verdict table: one row per gate (method, check), failures first, as HTML and as data.

A verdict row is a plain dict (the plugin builds them from its gate items, on the pytest-xdist
controller from what the workers sent): ``model``, ``method``, ``check``, ``outcome`` (one of
:data:`OUTCOMES`), ``measured``, ``baseline``, ``tolerance``, ``better``, ``direction``, ``meaning``,
``changed`` (what moved since the baseline, from its provenance) and ``message`` (the verdict line or
the error). Values not known for a gate (an error before anything was measured) are ``None``.

This module orders and renders them; it decides nothing: the outcome is the gate item's.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

# The order a reviewer reads them in: what needs action first.
OUTCOMES = ("failed", "error", "written", "passed")
OUTCOME_LABELS = {"failed": "FAILED", "error": "ERROR", "written": "baseline written", "passed": "pass"}
VERDICT_FIELDS = (
    "model", "method", "check", "outcome", "measured", "baseline", "tolerance", "better", "direction",
    "meaning", "changed", "message",
)


def failures_first(rows: Sequence[dict]) -> list[dict]:
    """``rows`` with failed, then erroring, then written, then passing gates; stable otherwise."""
    rank = {outcome: i for i, outcome in enumerate(OUTCOMES)}
    return sorted(rows, key=lambda r: rank.get(r.get("outcome"), len(OUTCOMES)))


def clean_row(row: dict) -> dict:
    """One verdict row with exactly :data:`VERDICT_FIELDS`, NaN as ``None`` (JSON has no NaN)."""
    cleaned = {}
    for key in VERDICT_FIELDS:
        value = row.get(key)
        if isinstance(value, float) and math.isnan(value):
            value = None
        cleaned[key] = value
    return cleaned


def counts(rows: Sequence[dict]) -> dict[str, int]:
    return {outcome: sum(r.get("outcome") == outcome for r in rows) for outcome in OUTCOMES}


def run_status(rows: Sequence[dict]) -> str:
    """``failed`` if any gate failed or erred, else ``written`` if a baseline was written, else
    ``passed`` if any gate held, else ``none`` (no gate ran)."""
    found = {r.get("outcome") for r in rows}
    if found & {"failed", "error"}:
        return "failed"
    if "written" in found:
        return "written"
    return "passed" if "passed" in found else "none"


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):.6g}"


def _headline(rows: Sequence[dict]) -> str:
    n = counts(rows)
    bad = [r for r in rows if r.get("outcome") in ("failed", "error")]
    if bad:
        named = ", ".join(f"{r['method']}::{r['check']}" for r in bad[:6])
        more = f", … {len(bad) - 6} more" if len(bad) > 6 else ""
        text = f"{len(bad)} of {len(rows)} gates did not hold: {named}{more}"
        return f'<p class="headline failed" id="verdict-headline">{html.escape(text)}</p>'
    if n["written"]:
        text = f"baselines written for {n['written']} of {len(rows)} gates (nothing compared)"
        return f'<p class="headline written" id="verdict-headline">{html.escape(text)}</p>'
    return f'<p class="headline passed" id="verdict-headline">all {len(rows)} gates held</p>'


HEADERS = ("method", "check", "verdict", "measured", "baseline", "tolerance", "changed since the baseline", "detail")


def verdict_table_html(rows: Sequence[dict]) -> str:
    """The page's first section: a headline, then the table with failures first (class ``failed``
    / ``error`` rows are highlighted by the page's style sheet)."""
    parts = ['<section id="verdicts"><h2>Verdicts</h2>']
    if not rows:
        parts.append("<p>No gate verdicts were recorded (the report was written without gates).</p></section>")
        return "\n".join(parts)
    ordered = failures_first(rows)
    parts.append(_headline(ordered))
    parts.append('<table class="verdicts"><thead><tr>')
    parts.extend(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    parts.append("</tr></thead><tbody>")
    for r in ordered:
        outcome = str(r.get("outcome"))
        tolerance = _number(r.get("tolerance"))
        if r.get("direction") and r.get("tolerance") is not None:
            tolerance += f" ({r['direction']})"
        cells = (
            r.get("method"), r.get("check"), OUTCOME_LABELS.get(outcome, outcome), _number(r.get("measured")),
            _number(r.get("baseline")), tolerance, r.get("changed") or "—", r.get("message") or "—",
        )
        title = f' title="{html.escape(r["meaning"])}"' if r.get("meaning") else ""
        parts.append(f'<tr class="{html.escape(outcome)}" data-outcome="{html.escape(outcome)}"{title}>')
        parts.extend(f"<td>{html.escape(str(c))}</td>" for c in cells)
        parts.append("</tr>")
    parts.append("</tbody></table></section>")
    return "\n".join(parts)


def baseline_points(rows: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """``{method: (MACs kept, top-1)}`` as the baselines recorded them, for the top-1-vs-MACs plot:
    from the ``top1`` and ``macs_reduction`` gates of methods that were compared (not just written)."""
    by_method: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("outcome") in ("passed", "failed") and r.get("baseline") is not None:
            by_method.setdefault(r["method"], {})[r["check"]] = float(r["baseline"])
    return {
        method: (1.0 - checks["macs_reduction"], checks["top1"])
        for method, checks in by_method.items()
        if "top1" in checks and "macs_reduction" in checks
    }
