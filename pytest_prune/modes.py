"""The two guards every stage uses around a model it does not own: train/eval modes restored
module by module (:func:`eval_mode`), and torch's thread count restored (:func:`torch_threads`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (BatchNorm on running statistics) for the block; every module's own
    mode is restored afterwards, so a model with mixed modes comes back exactly as it was."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


@contextmanager
def torch_threads(count: int = 1) -> Iterator[None]:
    """Run torch on ``count`` threads for the block, then restore the count. Small models run
    several times faster on one thread than on a few shared cores, where thread hand-offs cost
    more than they save; and one thread makes a reduction's order, so its rounding, fixed."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
