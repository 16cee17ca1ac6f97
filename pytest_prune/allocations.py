"""The names of the allocations (how a ratio is spread over groups), without importing torch: the
plugin's option help needs them in every pytest run, gates or not.

Without ``--prune-allocation`` each criterion is planned with its own ``natural_allocation`` (a class
attribute of every criterion, ``layerwise`` unless its paper ranks across layers).
:data:`GLOBAL_CRITERIA` repeats, for the help text, the criteria whose natural allocation is
``global``; a test keeps it equal to the classes' attributes.
"""

ALLOCATIONS: tuple[str, ...] = ("layerwise", "global")

GLOBAL_CRITERIA: tuple[str, ...] = ("cpmc", "taylor", "taylor-plain")
