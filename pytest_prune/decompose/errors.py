"""The one exception the decomposition step raises on input it cannot use."""

from __future__ import annotations

from ..errors import PruneError


class DecompositionError(PruneError):
    """A conv, a rank, a rank rule or a layer name given to the decomposition cannot be used."""
