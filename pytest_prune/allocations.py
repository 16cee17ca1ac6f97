"""The names of the allocations (how a ratio is spread over groups), without importing torch: the
plugin's option help needs them in every pytest run, gates or not."""

ALLOCATIONS: tuple[str, ...] = ("layerwise", "global")
