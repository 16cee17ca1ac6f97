"""How the fast CAR paths are held to the reference.

The prefix replay stacks candidates along the batch, so it equals the reference bit for bit only
where a sample's result does not depend on its batch. That is the CPU's kernels' business: it held
on the machines this project was measured on before, but on an AVX-512 Xeon (seen 2026-12-02) MKL's
sgemm rounds a Linear layer's rows of a 15-row batch otherwise than those of a 5-row one, a change
of about 1e-7 in a loss. So every comparison allows the rounding of a float32 loss (``REPLAY_ATOL``;
the consumer delta, which subtracts a channel's share, ``DELTA_ATOL``) and nothing more: a wrong
mask, sample or channel moves a loss increase by 1e-4 or more in these tests, and the accuracy
counts must match exactly.
"""

from __future__ import annotations

import torch

REPLAY_ATOL = 1e-6
DELTA_ATOL = 1e-5


def assert_close_losses(a: torch.Tensor, b: torch.Tensor, label: object, atol: float = REPLAY_ATOL) -> None:
    """The same NaNs (channels that were not candidates) and losses within ``atol``."""
    assert torch.equal(a.isnan(), b.isnan()), label
    assert torch.allclose(a.nan_to_num(), b.nan_to_num(), rtol=0, atol=atol), (label, float((a - b).abs().nan_to_num().max()))


def assert_same_counts_close_losses(a, b, names, atol: float = REPLAY_ATOL) -> None:
    """Two CAR indexes agree: equal accuracy drops, losses within ``atol``, for every group named."""
    for name in names:
        assert torch.equal(a.accuracy_drop[name].isnan(), b.accuracy_drop[name].isnan()), name
        assert torch.equal(a.accuracy_drop[name].nan_to_num(), b.accuracy_drop[name].nan_to_num()), name
        assert_close_losses(a.loss_increase[name], b.loss_increase[name], name, atol)
