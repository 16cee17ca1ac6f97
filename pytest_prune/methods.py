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

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .criteria import ScoringContext, known_criteria
from .decompose import HIGH_DIMENSIONAL_WEIGHTS, decompose_model, is_high_dimensional
from .errors import SpecError
from .groups import ChannelGroup
from .plan import PrunePlan

DECOMPOSITIONS = ("tucker", "tucker-vbmf", "meanvar+tucker")
RATIO_FREE = ("tucker-vbmf", "meanvar-auto", "meanvar+tucker")


def known_methods() -> list[str]:
    return sorted(set(known_criteria()) | set(DECOMPOSITIONS) | set(RATIO_FREE))


def check_method(name: str) -> str:
    name = name.strip()
    if name not in known_methods():
        raise SpecError(
            f"unknown pruning criterion {name!r}; known criteria and methods: "
            f"{', '.join(known_methods())} (check --prune-criteria)"
        )
    return name


def is_ratio_free(name: str) -> bool:
    return name in RATIO_FREE


def has_surgery(name: str) -> bool:
    """Whether the method removes channels (so the surgery-equivalence check applies)."""
    return name not in ("tucker", "tucker-vbmf")


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
    from .criteria.statistics import MeanVariance

    return MeanVariance().natural_plan(ctx)


def tucker(model: nn.Module, example: torch.Tensor, method: str, ratio: float | None) -> Decomposed:
    """Decompose for ``tucker`` (rank fraction ``ratio``), ``tucker-vbmf`` or the Tucker half of
    ``meanvar+tucker`` (VBMF on the high-dimensional convs only)."""
    if method == "tucker":
        new, report = decompose_model(model, example, ranks="fraction", value=ratio)
    elif method == "tucker-vbmf":
        new, report = decompose_model(model, example, ranks="vbmf")
    else:
        new, report = decompose_model(model, example, ranks="vbmf", threshold=HIGH_DIMENSIONAL_WEIGHTS)
    notes = [f"{layer.name}: {layer.decision} ({layer.reason})" for layer in report.layers]
    return Decomposed(new.eval(), notes)
