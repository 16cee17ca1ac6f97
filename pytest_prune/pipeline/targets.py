"""Targets and method ids: ``0.5`` or ``macs:0.5`` → a target; ``l1-macs0.5+lsq`` ↔ its parts.

Imports no torch: the plugin parses ``--prune-ratios`` here on a pytest-xdist controller, which
measures nothing and must not spend seconds importing torch before it starts its workers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError

BUDGET_KINDS = ("macs", "params")


@dataclass(frozen=True)
class Budget:
    kind: str  # "macs" or "params"
    keep: float  # fraction of the dense total to keep

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.keep:g}"


def parse_budget(text: str) -> Budget | None:
    """``macs:0.5`` → Budget; a plain number → None (a channel fraction)."""
    kind, sep, value = text.partition(":")
    if not sep:
        return None
    if kind not in BUDGET_KINDS:
        raise SpecError(
            f"--prune-ratios: {text!r} is neither a channel fraction nor a budget; write 0.5, "
            "macs:0.5 or params:0.6"
        )
    try:
        keep = float(value)
    except ValueError:
        raise SpecError(f"--prune-ratios: {text!r}: {value!r} is not a number") from None
    if not 0.0 < keep < 1.0:
        raise SpecError(f"--prune-ratios: {text!r}: the kept fraction must lie in (0, 1)")
    return Budget(kind, keep)


def check_ratio(ratio: float) -> float:
    if not 0.0 <= ratio < 1.0:
        raise SpecError(
            f"--prune-ratios: {ratio:g} is outside (0, 1); a ratio is the fraction of channels "
            "removed, e.g. 0.5 removes half"
        )
    return ratio


Target = float | Budget  # a channel fraction, or a MACs / parameter budget


def parse_target(text: str | float) -> Target:
    """``0.5`` → 0.5 (channel fraction); ``macs:0.5`` / ``params:0.6`` → a :class:`Budget`."""
    if isinstance(text, (int, float)):
        return check_ratio(float(text))
    budget = parse_budget(str(text).strip())
    if budget is not None:
        return budget
    try:
        return check_ratio(float(text))
    except ValueError:
        raise SpecError(
            f"--prune-ratios: {text!r} is not a number; give channel fractions such as 0.3,0.5 "
            "or budgets such as macs:0.5"
        ) from None


def target_label(target: Target | None) -> str:
    if target is None:
        return ""
    if isinstance(target, Budget):
        return f"{target.kind}{target.keep:g}"
    return f"{target:g}"


def candidate_id(path: str | Path) -> str:
    """``candidate-<file stem>``: the method id of a release candidate's gates and baseline."""
    return f"candidate-{Path(path).stem}"


def method_id(criterion: str, target: Target | None, recovery: str = "none") -> str:
    """The readable id of a compression method: ``l1-0.5``, ``l1-macs0.5+lsq``, ``meanvar``."""
    base = criterion if target is None else f"{criterion}-{target_label(target)}"
    return base if recovery in ("", "none") else f"{base}+{recovery}"


@dataclass(frozen=True)
class MethodSpec:
    """A method id taken apart: ``l1-macs0.5+lsq`` → ``("l1", "macs:0.5", "lsq")``."""

    criterion: str
    target: str | None  # as --prune-ratios spells it; None for ratio-free methods
    recovery: str = "none"


def parse_method_id(method: str) -> MethodSpec:
    """The inverse of :func:`method_id`, for the method ids of baseline files."""
    from .methods import is_ratio_free, known_methods

    known = set(known_methods())
    splits = [(method, "none")] + [
        (method[:i], method[i + 1:]) for i in range(len(method)) if method[i] == "+"
    ]
    for base, recovery in splits:
        if base in known and is_ratio_free(base):
            return MethodSpec(base, None, recovery)
        criterion, _, label = base.rpartition("-")
        if criterion in known and not is_ratio_free(criterion) and label:
            kind = next((k for k in ("macs", "params") if label.startswith(k)), None)
            target = f"{kind}:{label[len(kind):]}" if kind else label
            try:
                parse_target(target)
            except SpecError:
                continue
            return MethodSpec(criterion, target, recovery)
    raise SpecError(f"{method!r} is not a method id of the form <criterion>-<ratio>[+<recovery>]")
