"""pytest-prune: pruning gates, fixtures and property tests for compressed CNNs."""

__version__ = "0.1.0"
