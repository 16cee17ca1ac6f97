"""The names of the allocations (how a ratio is spread over groups), without importing torch: the
plugin's option help needs them in every pytest run, gates or not.

Without ``--prune-allocation`` each criterion is planned with its own ``natural_allocation`` (a class
attribute of every criterion, ``layerwise`` unless its paper ranks across layers).
:data:`GLOBAL_CRITERIA` repeats, for the help text, the criteria whose natural allocation is
``global``; a test keeps it equal to the classes' attributes.
"""

ALLOCATIONS: tuple[str, ...] = ("layerwise", "global", "sensitivity")

# ``sensitivity`` is planned by :mod:`pytest_prune.sensitivity` (a per-group sensitivity table,
# then a greedy split of the target), not by :func:`pytest_prune.plan.plan_from_scores`: the
# pipeline routes it there before a criterion plans.
SCORE_ALLOCATIONS: tuple[str, ...] = ("layerwise", "global")

# Without ``--prune-allocation`` a ``macs:``/``params:`` budget of a criterion whose natural
# allocation is ``layerwise`` is split by sensitivity (per-group tables on the calibration data,
# then a greedy split): on cifar-resnet56 at macs:0.59, ``l1`` kept 75.6 % one-shot that way and
# 14.2 % with every group losing the same fraction (docs/results.md, "Allocation by sensitivity").
# A criterion ranked across groups by its own paper keeps ``global``, where its scores are
# comparable, and costs no analysis: ``recon`` global and ``recon`` by sensitivity were within a
# point of each other after ``lsq:2048`` on ResNet-20 and -56, neither ahead on both
# (benchmarks/allocation.py). A plain channel fraction keeps the criterion's natural allocation.
BUDGET_ALLOCATION = "sensitivity"

GLOBAL_CRITERIA: tuple[str, ...] = ("cpmc", "recon", "taylor", "taylor-plain")
