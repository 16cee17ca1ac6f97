"""The end-of-run table: one row per method, what it measured and whether its gates held."""

from __future__ import annotations

from .session import GateState


def _verdict(checks: dict[str, str]) -> str:
    if not checks:
        return "-"
    values = set(checks.values())
    if "failed" in values or "error" in values:
        bad = sorted(k for k, v in checks.items() if v in ("failed", "error"))
        return "FAIL (" + ", ".join(bad) + ")"
    if values == {"written"}:
        return "baseline written"
    return "pass"


def summary_lines(state: GateState) -> list[str]:
    header = (
        f"{'model':<16} {'method':<22} {'top1':>7} {'drop':>7} {'MACs kept':>10} "
        f"{'params kept':>12} {'attr rho':>8} {'colour p/k':>10} {'speedup':>8} {'score s':>8}  gates"
    )
    lines = [header, "-" * len(header)]
    colour_input = state.run.input_shape[0] >= 3  # grey input: no colour-selective filters
    for r in state.run.results():
        colour = (
            f"{r.colour_selective_pruned:.2f}/{r.colour_selective_kept:.2f}"
            if colour_input and r.colour_selective_pruned is not None and r.colour_selective_kept is not None
            else "-"
        )
        lines.append(
            f"{r.model:<16} {r.method:<22} {r.top1_pruned:>7.2%} {r.accuracy_drop:>+7.2%} "
            f"{r.macs_kept:>10.3f} {r.params_kept:>12.3f} {_num(r.attribution_spearman):>8} "
            f"{colour:>10} {_num(r.speedup):>8} {r.score_seconds:>8.2f}  "
            f"{_verdict(state.outcomes.get(r.method, {}))}"
        )
    if state.run.results():
        r0 = state.run.results()[0]
        lines.append(
            f"dense {r0.model}: top-1 {r0.top1_dense:.2%}, {r0.macs_dense:,} MACs/sample, "
            f"{r0.params_dense:,} params; data {state.run.data_spec}"
        )
    if colour_input and any(r.colour_selective_pruned is not None for r in state.run.results()):
        lines.append(
            "colour p/k: share of colour-selective first-layer filters among the removed / the kept "
            f"(CSI > {state.run.settings.colour_threshold}); attr rho: mean Spearman correlation of "
            f"{state.run.settings.attribution_method.replace('_', ' ')} maps, dense vs compressed"
        )
    lines.extend(state.notes)
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
