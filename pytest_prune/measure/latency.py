"""Forward-pass latency of a model, and the speed-up of a pruned model over its dense original.

Fewer MACs do not always mean a faster forward pass (memory-bound layers, kernel choice), so the
speed-up is measured, not derived. How, and why:

* eval mode and ``torch.no_grad``: inference as deployed (the model's mode is restored);
* a fixed number of intra-op threads (default 1), set for the measurement and recorded in the
  result: latency with another thread count is another number, and one thread is the least
  disturbed by other work on a shared machine;
* ``warmup`` untimed passes first (allocator, lazy initialisation, caches), then ``repeats`` timed
  ones; the median and the interquartile range are reported, not the mean, so that a few passes
  slowed down by other processes do not move the result;
* :func:`speedup` times the two models *interleaved* in one loop, swapping which goes first every
  round, so that slow drift of the machine (frequency scaling, a neighbour's job) and order effects
  hit both alike instead of the second model alone;
* on CUDA inputs the device is synchronised around each pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import PruneError
from ..modes import eval_mode, torch_threads

DEFAULT_REPEATS = 30
DEFAULT_WARMUP = 5
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class LatencyResult:
    """Per-pass wall time of one model; ``samples`` in milliseconds, in the order measured."""

    median_ms: float
    iqr_ms: float
    samples: list[float] = field(default_factory=list)
    threads: int = DEFAULT_THREADS


@dataclass(frozen=True)
class Speedup:
    """Dense and pruned latency from one interleaved run; ``speedup`` = dense / pruned median."""

    dense: LatencyResult
    pruned: LatencyResult
    speedup: float
    threads: int = DEFAULT_THREADS


def _summary(samples: list[float], threads: int) -> LatencyResult:
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return LatencyResult(float(median), float(q3 - q1), samples, threads)


def _timed_pass(model: nn.Module, example_input: torch.Tensor) -> float:
    on_cuda = example_input.is_cuda
    if on_cuda:
        torch.cuda.synchronize(example_input.device)
    start = time.perf_counter_ns()
    model(example_input)
    if on_cuda:
        torch.cuda.synchronize(example_input.device)
    return (time.perf_counter_ns() - start) / 1e6


@torch.no_grad()
def interleaved_latency(
    models: Sequence[nn.Module],
    example_input: torch.Tensor,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
) -> list[LatencyResult]:
    """Latency of each model, timed in one loop; round ``r`` runs them in order, reversed on odd ``r``."""
    if repeats < 1 or warmup < 0 or threads < 1:
        raise PruneError(
            f"latency needs repeats ≥ 1, warmup ≥ 0 and threads ≥ 1; got repeats={repeats}, "
            f"warmup={warmup}, threads={threads}"
        )
    samples: list[list[float]] = [[] for _ in models]
    with torch_threads(threads), eval_mode(*models):
        for _ in range(warmup):
            for m in models:
                m(example_input)
        for r in range(repeats):
            order = range(len(models)) if r % 2 == 0 else reversed(range(len(models)))
            for i in order:
                samples[i].append(_timed_pass(models[i], example_input))
    return [_summary(s, threads) for s in samples]


def latency(
    model: nn.Module,
    example_input: torch.Tensor,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
) -> LatencyResult:
    """Median and IQR (ms) of ``repeats`` forward passes of ``model`` on ``example_input``."""
    return interleaved_latency([model], example_input, repeats, warmup, threads)[0]


def speedup(
    dense: nn.Module,
    pruned: nn.Module,
    example_input: torch.Tensor,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
) -> Speedup:
    """Dense and pruned latency measured interleaved in one run; speed-up > 1 means pruned is faster."""
    dense_result, pruned_result = interleaved_latency([dense, pruned], example_input, repeats, warmup, threads)
    ratio = dense_result.median_ms / pruned_result.median_ms if pruned_result.median_ms > 0 else float("inf")
    return Speedup(dense_result, pruned_result, ratio, threads)
