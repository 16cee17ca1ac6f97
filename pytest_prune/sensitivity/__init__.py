"""Per-group sensitivity analysis and the ``sensitivity`` allocation (NNI's SensitivityAnalysis,
AIMET's greedy per-layer ratio selection), for any criterion.

Two steps, one module each:

1. :func:`analyse` (:mod:`.analysis`): for every channel group (coupled layers pruned together; a
   residual stream is one group) the calibration top-1 when *only that group* loses its
   lowest-scored channels at each of a few fractions (default 0.25, 0.5, 0.75, 0.9), under a chosen
   recovery (``none``; ``lsq`` refits only the group's consumers). The result is a
   :class:`SensitivityTable` (group, fraction, top-1, loss, MACs and parameters saved).
2. :func:`allocate` (:mod:`.allocation`): the plan that meets a target by giving each group the
   fraction that costs least calibration accuracy (cross-entropy by default, or top-1) per unit
   saved -- greedy over the table with linear interpolation, a floor of 0 and a cap of
   :data:`DEFAULT_CAP` per group -- and within each group removes the criterion's lowest scores.

The stable entry points (the plugin's ``--prune-allocation sensitivity`` and the benchmarks both
call them)::

    from pytest_prune.sensitivity import plan_by_sensitivity
    plan, table = plan_by_sensitivity(criterion, ctx, target, cost, recovery="none")
    # criterion: a Criterion; ctx: its ScoringContext (calibration batches in ctx.batches);
    # target: a Budget (macs:/params:) or a plain channel fraction; cost: pipeline.budget.PlanCost

    table = analyse(model, groups, scores, batches, recovery="none")   # once per criterion
    plan = allocate(groups, scores, table, target, cost)                # once per target

``plan_by_sensitivity`` scores once, analyses once (pass ``table=`` to reuse one across targets)
and allocates. A plain channel fraction keeps its meaning under this allocation (that fraction of
all channels is removed); the greedy then spends channels, not MACs, so it asks for the least
accuracy lost per channel removed. A ``macs:`` budget spends MACs, a ``params:`` one parameters.
"""

from .allocation import DEFAULT_CAP, allocate, plan_by_sensitivity
from .analysis import DEFAULT_FRACTIONS, DEFAULT_IMAGES, SensitivityPoint, SensitivityTable, analyse
from .files import write_tables

__all__ = [
    "DEFAULT_CAP",
    "DEFAULT_FRACTIONS",
    "DEFAULT_IMAGES",
    "SensitivityPoint",
    "SensitivityTable",
    "allocate",
    "analyse",
    "plan_by_sensitivity",
    "write_tables",
]
