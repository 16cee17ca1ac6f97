"""Targets and method ids: ``0.5`` or ``macs:0.5`` → a target; ``l1-macs0.5+lsq`` ↔ its parts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError
from ..plan import check_ratio
from .budget import Budget, parse_budget
from .methods import is_ratio_free


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
    from .methods import known_methods

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
