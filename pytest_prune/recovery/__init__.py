"""Recovery: repairing a pruned model between surgery and measurement, chosen by spec string.

Steps, one module each, registered by name like the criteria: ``none``, ``bn`` (BatchNorm
re-estimation), ``lsq`` (layer-wise least-squares reconstruction), ``finetune:E`` and
``finetune-kd:E``. Steps compose with ``+`` and run left to right::

    result = parse_recovery("lsq+bn").recover(dense, pruned, data, seed=0, device="cpu")
    result.model, result.seconds, result.notes, result.skipped

``recover`` returns a new model; the dense and the pruned model it is given are never changed.
Import a step module here to make its name available to ``--prune-recovery``.
"""

from . import bn, finetune, lsq, none  # noqa: F401  (registration side effect)
from .base import RecoveryContext, RecoveryStep, StepReport
from .pipeline import (
    RecoveryPipeline,
    RecoveryResult,
    check_recoveries_apply,
    parse_recovery,
    resolve_device,
)
from .registry import get_step, known_steps, register, step_classes

__all__ = [
    "RecoveryContext",
    "RecoveryPipeline",
    "RecoveryResult",
    "RecoveryStep",
    "StepReport",
    "check_recoveries_apply",
    "get_step",
    "known_steps",
    "parse_recovery",
    "register",
    "resolve_device",
    "step_classes",
]
