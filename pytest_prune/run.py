"""One pruning run: spec strings in, measured results out.

This is the pipeline of the package, in order:
model + data → channel groups → scores (criterion) → plan → surgery → (recovery) → measurements.
Each (criterion, ratio) is computed once per :class:`PruneRun` and cached, so that the many gate
items that read it share one pruning. Nothing here knows pytest: the plugin and the benchmarks
both drive this class.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .criteria import ScoringContext, get_criterion
from .data import load_data
from .data.bundle import DataBundle
from .embedded import trained_lenet5
from .equivalence import max_abs_difference
from .errors import SpecError
from .groups import ChannelGroup
from .measure import ModelCount, count_model, evaluate
from .models import ModelInfo, load_model
from .plan import ALLOCATIONS, PrunePlan, check_ratio
from .surgery import find_channel_groups, prune_model


@dataclass(frozen=True)
class RunSettings:
    """Everything a run depends on; two runs with equal settings give equal results."""

    model: str
    weights: str | None = None
    allow_pickle: bool = False
    data: str | None = None  # None: the model's default data
    seed: int = 0
    allocation: str = "layerwise"
    device: str = "cpu"
    calibration_images: int | None = None  # None: the whole calibration split
    equivalence_images: int = 32
    cache_dir: Path | None = None  # where the embedded default's trained weights are kept

    def __post_init__(self):
        if self.allocation not in ALLOCATIONS:
            raise SpecError(
                f"--prune-allocation {self.allocation!r} is unknown; use one of {', '.join(ALLOCATIONS)}"
            )


def method_id(criterion: str, ratio: float | None, recovery: str = "none") -> str:
    """The readable id of a compression method: ``l1-0.5``, ``l1-0.5+lsq``, ``meanvar``."""
    base = criterion if ratio is None else f"{criterion}-{ratio:g}"
    return base if recovery in ("", "none") else f"{base}+{recovery}"


@dataclass
class MethodResult:
    """What pruning one model with one method measured."""

    model: str
    criterion: str
    ratio: float | None
    recovery: str
    method: str
    top1_dense: float
    top1_pruned: float
    macs_dense: int
    macs_pruned: int
    params_dense: int
    params_pruned: int
    score_seconds: float
    prune_seconds: float
    equivalence_max_abs: float
    channels_total: int
    channels_removed: int
    removed_per_group: dict[str, int] = field(default_factory=dict)
    pruned_model: nn.Module | None = field(default=None, repr=False, compare=False)
    plan: PrunePlan | None = field(default=None, repr=False, compare=False)

    @property
    def accuracy_drop(self) -> float:
        return self.top1_dense - self.top1_pruned

    @property
    def macs_kept(self) -> float:
        return self.macs_pruned / self.macs_dense if self.macs_dense else 1.0

    @property
    def params_kept(self) -> float:
        return self.params_pruned / self.params_dense if self.params_dense else 1.0

    def checks(self) -> dict[str, float]:
        """The values the gates compare with the baseline."""
        return {
            "accuracy_drop": self.accuracy_drop,
            "macs_reduction": 1.0 - self.macs_kept,
            "params_reduction": 1.0 - self.params_kept,
            "surgery_equivalence": self.equivalence_max_abs,
        }

    def row(self) -> dict[str, Any]:
        """A flat record for results.csv / results.json."""
        data = asdict(self)
        for key in ("pruned_model", "plan", "removed_per_group"):
            data.pop(key, None)
        data["accuracy_drop"] = self.accuracy_drop
        data["macs_kept"] = self.macs_kept
        data["params_kept"] = self.params_kept
        return data


class PruneRun:
    """A model, its data and every method measured on it, computed lazily and cached."""

    def __init__(self, settings: RunSettings):
        self.settings = settings
        self._results: dict[tuple[str, float | None, str], MethodResult] = {}

    # -- inputs -------------------------------------------------------------------------------
    @cached_property
    def info(self) -> ModelInfo:
        s = self.settings
        info = load_model(s.model, s.weights, allow_pickle=s.allow_pickle)
        if info.name == "lenet5" and not s.weights:
            # The embedded default: trained on first use, then cached by its recipe.
            info.model.load_state_dict(trained_lenet5(s.cache_dir))
            info.weights = "embedded:lenet5-digits"
        info.model.to(s.device).eval()
        return info

    @property
    def name(self) -> str:
        return self.info.name

    @cached_property
    def data(self) -> DataBundle:
        spec = self.settings.data or self.info.default_data
        if not spec:
            raise SpecError(
                f"model {self.settings.model!r} has no default data; pass --prune-data "
                "(e.g. package.module:callable returning (x, y) tensors)"
            )
        return load_data(spec, seed=self.settings.seed, input_shape=self.info.input_shape)

    @property
    def data_spec(self) -> str:
        return self.settings.data or self.info.default_data or ""

    @cached_property
    def example_input(self) -> torch.Tensor:
        x, _ = next(iter(self.data.loader("evaluation", batch_size=2)))
        return x.to(self.settings.device)

    @cached_property
    def equivalence_input(self) -> torch.Tensor:
        x, _ = next(iter(self.data.loader("evaluation", batch_size=self.settings.equivalence_images)))
        return x.to(self.settings.device)

    @cached_property
    def groups(self) -> list[ChannelGroup]:
        return find_channel_groups(self.info.model, self.example_input)

    @cached_property
    def dense_top1(self) -> float:
        return evaluate(self.info.model, self.data.evaluation, self.settings.device).top1

    @cached_property
    def dense_count(self) -> ModelCount:
        return count_model(self.info.model, self.example_input)

    @cached_property
    def calibration(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.data.calibration_batches(
            self.settings.calibration_images, batch_size=64, device=self.settings.device
        )

    def settings_record(self, recovery: str = "none") -> dict[str, Any]:
        """The settings a baseline is only comparable under."""
        s = self.settings
        return {
            "data": self.data_spec,
            "weights": Path(self.info.weights).name if self.info.weights else None,
            "seed": s.seed,
            "allocation": s.allocation,
            "recovery": recovery,
        }

    # -- one method ---------------------------------------------------------------------------
    def method(self, criterion: str, ratio: float, recovery: str = "none") -> MethodResult:
        key = (criterion, ratio, recovery)
        if key not in self._results:
            self._results[key] = self._prune(criterion, ratio, recovery)
        return self._results[key]

    def results(self) -> list[MethodResult]:
        return list(self._results.values())

    def _prune(self, criterion_name: str, ratio: float, recovery: str) -> MethodResult:
        check_ratio(ratio)
        criterion = get_criterion(criterion_name)
        s = self.settings
        model, groups = self.info.model, self.groups
        ctx = ScoringContext(
            model=model,
            groups=groups,
            batches=self.calibration if criterion.needs_data else [],
            seed=s.seed,
            device=torch.device(s.device),
        )
        torch.manual_seed(s.seed)
        start = time.perf_counter()
        plan = criterion.plan(ctx, ratio, s.allocation)  # type: ignore[arg-type]
        score_seconds = time.perf_counter() - start
        model.eval()
        start = time.perf_counter()
        pruned = prune_model(model, groups, plan, self.example_input)
        prune_seconds = time.perf_counter() - start
        equivalence = max_abs_difference(model, pruned, groups, plan, self.equivalence_input)
        if recovery not in ("", "none"):
            raise SpecError(f"recovery {recovery!r} is not available in this version")
        top1 = evaluate(pruned, self.data.evaluation, s.device).top1
        count = count_model(pruned, self.example_input)
        return MethodResult(
            model=self.name,
            criterion=criterion_name,
            ratio=ratio,
            recovery=recovery or "none",
            method=method_id(criterion_name, ratio, recovery),
            top1_dense=self.dense_top1,
            top1_pruned=top1,
            macs_dense=self.dense_count.macs,
            macs_pruned=count.macs,
            params_dense=self.dense_count.params,
            params_pruned=count.params,
            score_seconds=score_seconds,
            prune_seconds=prune_seconds,
            equivalence_max_abs=equivalence,
            channels_total=sum(g.size for g in groups),
            channels_removed=plan.count(),
            removed_per_group={g.name: len(plan.remove.get(g.name, ())) for g in groups},
            pruned_model=pruned,
            plan=plan,
        )
