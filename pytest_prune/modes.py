"""The two guards every stage uses around a model it does not own: train/eval modes restored
module by module (:func:`eval_mode`), and torch's thread count restored (:func:`torch_threads`);
and a pytest-xdist worker's share of the cores (:func:`share_cores`)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def modes_kept(*models: nn.Module) -> Iterator[None]:
    """Restore every module's own train/eval flag on exit, whatever the block switched: a model
    with mixed modes (a frozen BatchNorm in eval inside a training model) comes back exactly as
    it was, where ``model.train(was_training)`` would flatten it."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    try:
        yield
    finally:
        for module, training in saved:
            module.training = training


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[nn.Module | tuple[nn.Module, ...]]:
    """The models in eval mode (BatchNorm on running statistics) for the block, every module's
    own mode restored afterwards (:func:`modes_kept`). Yields the model, or the tuple of them."""
    with modes_kept(*models):
        for model in models:
            model.eval()
        yield models[0] if len(models) == 1 else models


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


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def share_cores(processes: int) -> int | None:
    """Give this process its share of the machine's cores (torch intra-op threads), one of
    ``processes`` running at once (pytest-xdist workers), unless the user set a thread count in
    the environment; returns the count set, or None. Every process otherwise takes one thread per
    core, and ``-n 2`` on 2 cores ran 4 threads that waited on each other: a user's small ResNet
    took 40 s under ``-n 2`` against 14 s serially."""
    if processes <= 1 or any(os.environ.get(name) for name in THREAD_VARIABLES):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = max(1, cores // processes)
    torch.set_num_threads(count)
    return count
