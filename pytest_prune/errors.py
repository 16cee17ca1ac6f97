"""The exceptions pytest-prune raises on bad input.

Every message names the input that is wrong and how to fix it; the plugin turns these into clean
pytest failures (or usage errors) instead of tracebacks from deep inside torch.
"""


class PruneError(Exception):
    """Base class: something the user gave us cannot be used as it is."""


class SpecError(PruneError):
    """A model, data, criterion, ratio or recovery spec string cannot be resolved."""


class WeightsError(PruneError):
    """A weights or candidate file is missing, corrupt, or does not fit the architecture."""


class DataError(PruneError):
    """A data source is missing or yields batches of the wrong shape or type."""


class TraceError(PruneError):
    """The model cannot be traced into a dependency graph, or holds a layer we cannot prune."""


class BaselineError(PruneError):
    """A stored baseline is missing, corrupt, or was measured under other settings."""
