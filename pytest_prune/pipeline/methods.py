"""Compression methods that are not a channel criterion at a ratio.

``--prune-criteria`` names pruning criteria (``l1``, ``car``, …: run at every ratio) and these:

* ``tucker`` — Tucker-2 decomposition of every conv that gains from it, with each ratio of
  ``--prune-ratios`` as the rank fraction (``tucker-0.5`` keeps half the ranks of each mode);
* ``tucker-vbmf`` — Tucker-2 with ranks chosen by VBMF; runs once, no ratio;
* ``meanvar-auto`` — statistics pruning in the paper's own mode: k-means on each layer's filter
  mean/variance decides how many filters it loses; runs once;
* ``meanvar+tucker`` — Gong et al. 2020's combination: ``meanvar-auto`` on the low-dimensional
  convs, then Tucker-2 (VBMF ranks) on the high-dimensional ones (kernels of at least
  :data:`~pytest_prune.decompose.HIGH_DIMENSIONAL_WEIGHTS` weights); runs once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..criteria import ScoringContext, known_criteria
from ..decompose import HIGH_DIMENSIONAL_WEIGHTS, decompose_model, is_high_dimensional
from ..errors import SpecError
from ..groups import ChannelGroup
from ..measure import count_model
from ..plan import PrunePlan
from .results import OneShot

@dataclass(frozen=True)
class Method:
    """A way of compressing a model, and what follows from it for the rest of the run.

    ``ratio_free``: it chooses its own amount and runs once, not per ratio. ``removes_channels``:
    its result comes out of the channel surgery, so the surgery-equivalence and colour checks
    apply. ``compress``: ``compress(run, target) -> OneShot`` for a method that is not a criterion's
    plan followed by surgery (``run`` is the :class:`~pytest_prune.pipeline.run.PruneRun`); None for the
    criteria, which :meth:`PruneRun.one_shot` plans and prunes itself.
    """

    name: str
    ratio_free: bool = False
    removes_channels: bool = True
    compress: Callable[[Any, Any], Any] | None = None


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method that is not a criterion (criteria register in :mod:`pytest_prune.criteria`)."""
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The method named ``name``: a registered one, or a criterion at a ratio."""
    name = name.strip()
    if name in _METHODS:
        return _METHODS[name]
    if name in known_criteria():
        return Method(name)
    raise SpecError(
        f"unknown pruning criterion {name!r}; known criteria and methods: "
        f"{', '.join(known_methods())} (check --prune-criteria)"
    )


def known_methods() -> list[str]:
    return sorted(set(known_criteria()) | set(_METHODS))


def check_method(name: str) -> str:
    return get_method(name).name


def is_ratio_free(name: str) -> bool:
    return get_method(name).ratio_free


@dataclass
class Decomposed:
    """A model after a decomposition step, with what it left alone and why."""

    model: nn.Module
    notes: list[str] = field(default_factory=list)


def low_dimensional_groups(
    model: nn.Module, groups: Sequence[ChannelGroup], threshold: int = HIGH_DIMENSIONAL_WEIGHTS
) -> list[ChannelGroup]:
    """Groups rooted at a conv that Tucker would not decompose (fewer weights than ``threshold``)."""
    modules = dict(model.named_modules())
    out = []
    for g in groups:
        root = modules[g.root]
        if isinstance(root, nn.Conv2d) and not is_high_dimensional(root, threshold):
            out.append(g)
    return out


def meanvar_auto_plan(ctx: ScoringContext) -> PrunePlan:
    from ..criteria.statistics import MeanVariance

    return MeanVariance().natural_plan(ctx)


def _decomposed_shot(run: Any, decomposed: Decomposed, ratio: float | None, seconds: float) -> OneShot:
    return OneShot(
        plan=None, ratio=ratio, model=decomposed.model, top1=run.top1_of(decomposed.model),
        count=count_model(decomposed.model, run.example_input), score_seconds=seconds,
        prune_seconds=0.0, equivalence_max_abs=None, notes=decomposed.notes,
    )


def _decompose(model: nn.Module, example: torch.Tensor, **how: Any) -> Decomposed:
    new, report = decompose_model(model, example, **how)
    notes = [f"{layer.name}: {layer.decision} ({layer.reason})" for layer in report.layers]
    return Decomposed(new.eval(), notes)


def _rank_fractions_only(method: str, target: Any) -> None:
    from .budget import Budget

    if isinstance(target, Budget):
        raise SpecError(f"{method!r} takes rank fractions, not budgets such as {target.label}")


def _tucker(run: Any, target: float) -> Any:
    _rank_fractions_only("tucker", target)
    start = time.perf_counter()
    decomposed = _decompose(run.info.model.eval(), run.example_input, ranks="fraction", value=target)
    return _decomposed_shot(run, decomposed, target, time.perf_counter() - start)


def _tucker_vbmf(run: Any, target: None) -> Any:
    start = time.perf_counter()
    decomposed = _decompose(run.info.model.eval(), run.example_input, ranks="vbmf")
    return _decomposed_shot(run, decomposed, None, time.perf_counter() - start)


def _meanvar_auto(run: Any, target: None, groups: Sequence[ChannelGroup] | None = None) -> Any:
    model = run.info.model.eval()
    start = time.perf_counter()
    ctx = ScoringContext(model=model, groups=run.groups if groups is None else groups,
                         seed=run.settings.seed, device=torch.device(run.settings.device))
    plan = meanvar_auto_plan(ctx)
    return run.pruned_shot(plan, time.perf_counter() - start, plan.count() / sum(g.size for g in run.groups))


def _meanvar_tucker(run: Any, target: None) -> Any:
    """Statistics pruning on the low-dimensional convs, then VBMF Tucker on the high-dimensional."""
    shot = _meanvar_auto(run, None, low_dimensional_groups(run.info.model, run.groups))
    decomposed = _decompose(shot.model, run.example_input, ranks="vbmf", threshold=HIGH_DIMENSIONAL_WEIGHTS)
    shot.model, shot.notes = decomposed.model, decomposed.notes
    shot.top1 = run.top1_of(decomposed.model)
    shot.count = count_model(decomposed.model, run.example_input)
    return shot


register_method(Method("tucker", removes_channels=False, compress=_tucker))
register_method(Method("tucker-vbmf", ratio_free=True, removes_channels=False, compress=_tucker_vbmf))
register_method(Method("meanvar-auto", ratio_free=True, compress=_meanvar_auto))
register_method(Method("meanvar+tucker", ratio_free=True, compress=_meanvar_tucker))
