"""What a run depends on: :class:`RunSettings` (two runs with equal settings give equal results)."""

from __future__ import annotations

from dataclasses import dataclass

from ..allocations import ALLOCATIONS
from ..errors import SpecError

# measure.colour.COLOUR_SELECTIVE_THRESHOLD, repeated because this module imports no torch (a
# pytest-xdist controller builds the settings and measures nothing); a test keeps the two equal.
COLOUR_THRESHOLD = 0.25


@dataclass(frozen=True)
class RunSettings:
    """Everything a run depends on; two runs with equal settings give equal results."""

    model: str
    name: str | None = None  # gate ids and baseline folder (None: from the model spec)
    ignore: tuple[str, ...] = ()  # module names or glob patterns whose channels are kept
    eval_limit: int | None = None  # evaluate on the first N evaluation samples only (a quick gate)
    weights: str | None = None
    allow_pickle: bool = False
    data: str | None = None  # None: the model's default data
    seed: int = 0
    allocation: str | None = None  # None: each criterion's own (``Criterion.natural_allocation``)
    sensitivity_recovery: str = "none"  # recovery inside the sensitivity analysis: none or lsq
    device: str = "cpu"
    calibration_images: int | None = None  # None: the whole calibration split
    equivalence_images: int = 32
    attribution_images: int = 16
    attribution_method: str = "integrated_gradients"  # or "saliency", "gradcam"
    colour_images: int = 256  # evaluation images the colour-selectivity index ranks
    colour_threshold: float = COLOUR_THRESHOLD
    latency_repeats: int = 20
    latency_backend: str | None = None  # eager or onnxruntime; None: measure.latency.default_backend
    round_to: int = 1  # every pruned group keeps a multiple of this many channels (pytest_prune.plan)
    export_gate: bool = True  # gate the ONNX export (pytest_prune.measure.export); --prune-no-export: False

    def __post_init__(self):
        if self.allocation is not None and self.allocation not in ALLOCATIONS:
            raise SpecError(
                f"--prune-allocation {self.allocation!r} is unknown; use one of {', '.join(ALLOCATIONS)}"
            )
        if self.round_to < 1:
            raise SpecError(f"--prune-round-to {self.round_to} must be a whole number of at least 1 (e.g. 8)")
        if self.sensitivity_recovery not in ("none", "lsq"):
            raise SpecError(
                f"--prune-sensitivity-recovery {self.sensitivity_recovery!r} is unknown; use none or lsq"
            )
