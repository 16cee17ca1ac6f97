"""Shared set-up of the benchmarks: the pretrained CIFAR ResNets and their data.

The weights and data live outside the repository (``../shared/data/cifar10`` or the folder named by
``PRUNE_CIFAR10_DIR``); every benchmark exits with a clear message when they are absent.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from pytest_prune.pipeline.budget import Budget, PlanCost, ratio_for_budget
from pytest_prune.pipeline.budget import plan_for_budget as budget_plan
from pytest_prune.criteria import Criterion, ScoringContext, Scores
from pytest_prune.data import load_data
from pytest_prune.data.bundle import DataBundle
from pytest_prune.groups import ChannelGroup
from pytest_prune.measure import ModelCount, count_model, evaluate
from pytest_prune.models import ModelInfo, load_model
from pytest_prune.plan import Allocation, PrunePlan, plan_from_scores
from pytest_prune.surgery import find_channel_groups, prune_model

INNER = re.compile(r"^layer\d+\.\d+\.conv1$")


def data_dir() -> Path:
    folder = Path(os.environ.get("PRUNE_CIFAR10_DIR", Path(__file__).resolve().parents[2] / "shared/data/cifar10"))
    if not (folder / "cifar10-test-exact932.npz").is_file():
        sys.exit(f"benchmark needs the CIFAR-10 data and weights in {folder} (set PRUNE_CIFAR10_DIR)")
    return folder


def run_settings(model: str, calibration_images: int | None = None):
    """The :class:`~pytest_prune.pipeline.run.RunSettings` of ``model``: a CIFAR ResNet with its pretrained
    weights and the shared CIFAR-10 data, any other model as the plugin would build it."""
    from pytest_prune.pipeline.settings import RunSettings

    if not model.startswith("cifar-resnet"):
        return RunSettings(model)
    folder = data_dir()
    return RunSettings(model, weights=str(folder / f"resnet{model.removeprefix('cifar-resnet')}.th"),
                       data=f"cifar10:{folder}", calibration_images=calibration_images)


@dataclass
class Setup:
    info: ModelInfo
    data: DataBundle
    groups: list[ChannelGroup]
    example: torch.Tensor
    dense_top1: float
    dense_count: ModelCount
    batches: list[tuple[torch.Tensor, torch.Tensor]]


def setup(model: str, scope: str = "all", calibration: int = 512) -> Setup:
    folder = data_dir()
    depth = model.removeprefix("cifar-resnet")
    info = load_model(model, str(folder / f"resnet{depth}.th"))
    info.model.eval()
    data = load_data(f"cifar10:{folder}")
    example = next(iter(data.loader("evaluation", batch_size=2)))[0]
    groups = find_channel_groups(info.model, example)
    if scope == "inner":  # each block's inner channel only (conv1 out → bn1 → conv2 in)
        groups = [g for g in groups if INNER.match(g.root)]
    return Setup(
        info, data, groups, example,
        evaluate(info.model, data.evaluation).top1,
        count_model(info.model, example),
        data.calibration_batches(calibration, batch_size=64),
    )


def timed(fn: Callable):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def plan_for_budget(
    s: Setup, budget: Budget, scores: Scores, criterion: Criterion | None, ctx: ScoringContext | None,
    allocation: Allocation = "layerwise",
) -> tuple[PrunePlan, float]:
    """The ``allocation`` plan meeting ``budget`` (the benchmarks pass it explicitly, never a
    criterion's natural one, so a table says what it measured); iterative criteria re-plan at the
    fraction found."""
    cost = PlanCost(s.info.model, s.groups, s.dense_count)
    if criterion is None:  # a Torch-Pruning importance: its scores are all there is
        ratio = ratio_for_budget(budget, cost, lambda r: plan_from_scores(s.groups, scores, r, allocation))
        return plan_from_scores(s.groups, scores, ratio, allocation), ratio
    return budget_plan(criterion, ctx, budget, cost, allocation, scores)


def recovered(
    s: Setup, pruned: torch.nn.Module, plan: PrunePlan, recovery: str, seed: int = 0
) -> tuple[torch.nn.Module, float]:
    """``pruned`` (cut from the dense model by ``plan``) after ``recovery`` (run with ``seed``), and its seconds."""
    from pytest_prune.recovery import parse_recovery

    if recovery == "none":
        return pruned, 0.0
    result = parse_recovery(recovery).recover(s.info.model, pruned, s.data, seed=seed, groups=s.groups, plan=plan)
    return result.model, result.seconds


def correct_per_image(s: Setup, plan: PrunePlan, recovery: str = "none") -> torch.Tensor:
    """1.0 where the pruned (and recovered) model is right on an evaluation image, else 0.0."""
    from pytest_prune.measure.accuracy import batches_of

    model, _ = recovered(s, prune_model(s.info.model, s.groups, plan, s.example), plan, recovery)
    model.eval()
    with torch.no_grad():
        return torch.cat([(model(x).argmax(1) == y).double() for x, y in batches_of(s.data.evaluation, 256)])


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean of a − b over the same images and its standard error, in points (per-image 0/1)."""
    d = a - b
    return 100 * float(d.mean()), 100 * float(d.std()) / math.sqrt(len(d))


def measure(s: Setup, plan: PrunePlan, recoveries: Sequence[str] = ("none", "bn")) -> dict[str, float]:
    pruned = prune_model(s.info.model, s.groups, plan, s.example)
    out = {"macs_kept": count_model(pruned, s.example).macs / s.dense_count.macs}
    for recovery in recoveries:
        model, seconds = recovered(s, pruned, plan, recovery)
        out[f"top1_{recovery}"] = evaluate(model, s.data.evaluation).top1
        out[f"seconds_{recovery}"] = seconds
    return out
