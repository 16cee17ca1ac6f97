"""What a pruning run measured: the dataclasses that the gates, the summary and the report read.

:class:`OneShot` is a compressed model straight out of surgery (or decomposition), before any
recovery; :class:`MethodResult` is everything measured for one method on one model, after recovery.
They hold values only: :class:`~pytest_prune.pipeline.run.PruneRun` fills them in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ..measure import ModelCount
from ..plan import PrunePlan


@dataclass
class OneShot:
    """A pruned model straight out of surgery, before any recovery."""

    plan: PrunePlan | None  # None for a pure decomposition
    ratio: float | None
    model: nn.Module
    top1: float
    count: ModelCount
    score_seconds: float
    prune_seconds: float
    equivalence_max_abs: float | None  # None where no channels were removed by surgery
    notes: list[str] = field(default_factory=list)


@dataclass
class MethodResult:
    """What pruning one model with one method measured."""

    model: str
    criterion: str
    ratio: float | None  # the channel fraction removed (found by search for a budget)
    recovery: str
    method: str
    top1_dense: float
    top1_pruned: float  # after recovery
    top1_one_shot: float  # straight out of surgery
    recovery_seconds: float
    macs_dense: int
    macs_pruned: int
    params_dense: int
    params_pruned: int
    score_seconds: float
    prune_seconds: float
    equivalence_max_abs: float | None
    storage_bytes_dense: int
    storage_bytes_compressed: int
    channels_total: int
    channels_removed: int
    target: str = ""  # as given: "0.5", "macs0.5"; empty for ratio-free methods
    attribution_spearman: float | None = None
    attribution_topk_iou: float | None = None
    colour_selective_pruned: float | None = None  # share of removed first-layer filters
    colour_selective_kept: float | None = None
    colour_threshold: float | None = None
    latency_dense_ms: float | None = None
    latency_pruned_ms: float | None = None
    speedup: float | None = None
    latency_backend: str | None = None  # eager or onnxruntime: what the latency was measured in
    latency_dense_iqr_ms: float | None = None  # the spread (interquartile range) of each median
    latency_pruned_iqr_ms: float | None = None
    export_max_diff: float | None = None  # max |ONNX Runtime - PyTorch| (pytest_prune.measure.export)
    onnx_bytes: int | None = None  # size of the exported ONNX file
    export_error: str | None = None  # why the model could not be exported, if it could not
    match_mean_cosine: float | None = None  # candidates: how well its filters matched dense ones
    notes: list[str] = field(default_factory=list)
    removed_per_group: dict[str, int] = field(default_factory=dict)
    # what it was measured on (see pytest_prune.pipeline.provenance): dense model, data, plan, layer counts
    provenance: dict[str, Any] = field(default_factory=dict)
    # which looks (attribution_retention, colour_selectivity, speedup) have been measured
    measured: set[str] = field(default_factory=set, repr=False, compare=False)
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

    @property
    def macs_reduction(self) -> float:
        return 1.0 - self.macs_kept

    @property
    def params_reduction(self) -> float:
        return 1.0 - self.params_kept

    def checks(self) -> dict[str, float]:
        """The values the gates compare with the baseline (each check reads its own field)."""
        from ..gating.checks import CHECKS, SPEEDUP

        values = {c.name: c.read(self) for c in (*CHECKS.values(), SPEEDUP)}
        return {name: value for name, value in values.items() if value is not None}

    def row(self) -> dict[str, Any]:
        """A flat record for results.csv / results.json."""
        data = asdict(self)
        for key in ("pruned_model", "plan", "removed_per_group", "notes", "provenance", "measured"):
            data.pop(key, None)
        data.update(provenance_columns(self.provenance))
        data["accuracy_drop"] = self.accuracy_drop
        data["macs_kept"] = self.macs_kept
        data["params_kept"] = self.params_kept
        return data


def provenance_columns(provenance: dict[str, Any]) -> dict[str, Any]:
    """The provenance as flat ``results.csv`` columns (digests; removed channels per group as JSON)."""
    plan = provenance.get("plan") or {}
    return {
        "dense_digest": provenance.get("dense_model", {}).get("digest"),
        "evaluation_digest": provenance.get("data", {}).get("evaluation"),
        "calibration_digest": provenance.get("data", {}).get("calibration"),
        "plan_digest": plan.get("digest"),
        "plan_removed": json.dumps(plan["removed"], sort_keys=True) if plan else None,
        "compressed_digest": provenance.get("compressed_digest"),
    }
