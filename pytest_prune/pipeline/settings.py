"""What a run depends on: :class:`RunSettings` (two runs with equal settings give equal results)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SpecError
from ..measure.colour import COLOUR_SELECTIVE_THRESHOLD
from ..plan import ALLOCATIONS


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
    device: str = "cpu"
    calibration_images: int | None = None  # None: the whole calibration split
    equivalence_images: int = 32
    attribution_images: int = 16
    attribution_method: str = "integrated_gradients"  # or "saliency", "gradcam"
    colour_images: int = 256  # evaluation images the colour-selectivity index ranks
    colour_threshold: float = COLOUR_SELECTIVE_THRESHOLD
    latency_repeats: int = 20

    def __post_init__(self):
        if self.allocation is not None and self.allocation not in ALLOCATIONS:
            raise SpecError(
                f"--prune-allocation {self.allocation!r} is unknown; use one of {', '.join(ALLOCATIONS)}"
            )
