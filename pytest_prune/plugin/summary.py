"""The end-of-run table: one row per method, what it measured and whether its gates held."""

from __future__ import annotations

from .session import GateState


def _verdict(checks: dict[str, str], verdicts: dict[str, dict]) -> str:
    """``pass``, ``baseline written``, or what went wrong: ``FAIL (checks)`` for regressions (a
    measured value judged against its baseline), ``ERROR (checks: cause)`` for checks that could
    not be judged at all (an unreadable baseline, a model that cannot be measured), so that a
    corrupt file never reads as eight regressions."""
    if not checks:
        return "-"
    bad = sorted(k for k, v in checks.items() if v in ("failed", "error"))
    if not bad:
        return "baseline written" if set(checks.values()) == {"written"} else "pass"
    regressed = [k for k in bad if checks[k] == "failed" and "measured" in verdicts.get(k, {})]
    unjudged = [k for k in bad if k not in regressed]
    parts = [f"FAIL ({', '.join(regressed)})"] if regressed else []
    if unjudged:
        causes = sorted({_cause(verdicts.get(k, {}).get("message")) for k in unjudged})
        named = "every check" if len(unjudged) == len(checks) and len(checks) > 1 else ", ".join(unjudged)
        parts.append(f"ERROR ({named}: {', '.join(causes)})")
    return "; ".join(parts)


def _cause(message: str | None) -> str:
    """The error's class name where the message starts with one (``BaselineError: ...``)."""
    head = (message or "").split(":", 1)[0].strip()
    return head if head.isidentifier() and head.endswith(("Error", "Failure")) else "not judged"


def summary_lines(state: GateState) -> list[str]:
    """The table, from results rows: the same on the controller of a pytest-xdist run, which
    measured nothing itself, as in a single process."""
    header = (
        f"{'model':<16} {'method':<22} {'top1':>7} {'drop':>7} {'MACs kept':>10} "
        f"{'params kept':>12} {'attr rho':>8} {'colour p/k':>10} {'speedup':>8} {'score s':>8}  gates"
    )
    rows = ordered_rows(state)
    lines = [header, "-" * len(header)]
    for r in rows:
        pruned, kept = r.get("colour_selective_pruned"), r.get("colour_selective_kept")
        colour = f"{pruned:.2f}/{kept:.2f}" if pruned is not None and kept is not None else "-"
        lines.append(
            f"{r['model']:<16} {r['method']:<22} {r['top1_pruned']:>7.2%} {r['accuracy_drop']:>+7.2%} "
            f"{r['macs_kept']:>10.3f} {r['params_kept']:>12.3f} {_num(r.get('attribution_spearman')):>8} "
            f"{colour:>10} {_num(r.get('speedup')):>8} {r['score_seconds']:>8.2f}  "
            f"{_verdict(state.outcomes.get(r['method'], {}), state.verdicts.get(r['method'], {}))}"
        )
    if rows:
        r0 = rows[0]
        data = state.data_spec or (state.run.data_spec if state.run is not None and state.run.results() else "")
        lines.append(
            f"dense {r0['model']}: top-1 {r0['top1_dense']:.2%}, {r0['macs_dense']:,} MACs/sample, "
            f"{r0['params_dense']:,} params; data {data}"
        )
    if any(r.get("colour_selective_pruned") is not None for r in rows):
        lines.append(
            "colour p/k: share of colour-selective first-layer filters among the removed / the kept "
            f"(CSI > {state.run_settings().colour_threshold}); attr rho: mean Spearman correlation of "
            f"{state.run_settings().attribution_method.replace('_', ' ')} maps, dense vs compressed"
        )
    lines.extend(state.notes)
    return lines


def ordered_rows(state: GateState) -> list[dict]:
    """Every measured method's row, in the order the gates are generated (workers finish in any order)."""
    return sorted(state.rows(), key=lambda r: method_order(state, r["method"]))


def verdict_rows(state: GateState) -> list[dict]:
    """One row per gate that ran (method, check): its outcome and what :meth:`GateState.describe`
    recorded, in gate order (the report puts failures first). Built from the outcomes, which the
    workers of a pytest-xdist run send to the controller."""
    from ..gating.checks import CHECKS, SPEEDUP, spec_of
    from ..gating.verdict import DIRECTION

    check_order = [*CHECKS, SPEEDUP.name]
    rows = []
    for method in sorted(state.outcomes, key=lambda m: method_order(state, m)):
        checks = state.outcomes[method]
        for check in sorted(checks, key=lambda c: check_order.index(c) if c in check_order else len(check_order)):
            spec = spec_of(check) if check in check_order else None
            fields = state.verdicts.get(method, {}).get(check, {})
            rows.append({
                "model": state.model_name, "method": method, "check": check, "outcome": checks[check],
                "measured": fields.get("measured"), "baseline": fields.get("baseline"),
                "tolerance": fields.get("tolerance"), "better": spec.better if spec else None,
                "direction": DIRECTION[spec.better] if spec else None,
                "meaning": spec.meaning if spec else None, "changed": fields.get("changed"),
                "message": fields.get("message"),
            })
    return rows


def method_order(state: GateState, method: str) -> int:
    """Rows in the order the gates are generated (workers finish in any order)."""
    from ..method_names import is_ratio_free
    from ..pipeline.targets import candidate_id, method_id

    opts = state.options
    order = [
        method_id(c, None if is_ratio_free(c) else r, rec)
        for c in opts.criteria for r in ([None] if is_ratio_free(c) else opts.ratios) for rec in opts.recoveries
    ] + [candidate_id(p) for p in opts.candidates]
    return order.index(method) if method in order else len(order)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
