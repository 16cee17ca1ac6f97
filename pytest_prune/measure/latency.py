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

Two backends (``--prune-latency-backend``): ``eager`` times the PyTorch modules; ``onnxruntime``
exports both models (:mod:`pytest_prune.measure.export`) and times ONNX Runtime sessions of one
intra-op thread on the same batch, interleaved the same way: the runtime a model is deployed with,
whose kernels and fused graph can rank two widths otherwise than eager PyTorch does. The default
(:func:`default_backend`) is ``onnxruntime`` where the onnx extra is installed and the run is on the
CPU, since that is what is shipped; ``eager`` without the extra, or on a GPU (ONNX Runtime runs here
on the CPU only). A model the exporter refuses is timed eagerly under the default (its export gate
names the reason); asked for by name, ``onnxruntime`` fails instead. The speed-up is no stored
baseline, so the default moving with an installed package changes no verdict; the backend is
recorded beside every latency, so no figure is read as the other's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import PruneError, SpecError, TraceError
from ..modes import eval_mode, torch_threads

DEFAULT_REPEATS = 30
DEFAULT_WARMUP = 5
DEFAULT_THREADS = 1
BACKENDS = ("eager", "onnxruntime")


def default_backend(device: str = "cpu") -> str:
    """``onnxruntime`` with the onnx extra on a CPU run, else ``eager`` (see the module docstring)."""
    from .export import onnx_available

    return "onnxruntime" if device == "cpu" and onnx_available() else "eager"


def check_backend(backend: str) -> str:
    """``backend`` if known and usable here; else :class:`SpecError` naming the fix."""
    from .export import ONNX_HINT, onnx_available

    if backend not in BACKENDS:
        raise SpecError(f"--prune-latency-backend {backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and not onnx_available():
        raise SpecError(f"--prune-latency-backend onnxruntime: {ONNX_HINT}")
    return backend


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


def _timed_call(run: Callable[[], Any]) -> float:
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) / 1e6


def _eager_runner(model: nn.Module, example_input: torch.Tensor) -> Callable[[], Any]:
    if not example_input.is_cuda:
        return lambda: model(example_input)

    def run():
        torch.cuda.synchronize(example_input.device)
        model(example_input)
        torch.cuda.synchronize(example_input.device)

    return run


def interleaved_calls(
    runners: Sequence[Callable[[], Any]], repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
) -> list[LatencyResult]:
    """Wall time of each call in ``runners``, timed in one loop after ``warmup`` untimed rounds;
    round ``r`` calls them in order, reversed on odd ``r``. Any backend: the caller fixes its threads."""
    if repeats < 1 or warmup < 0 or threads < 1:
        raise PruneError(
            f"latency needs repeats ≥ 1, warmup ≥ 0 and threads ≥ 1; got repeats={repeats}, "
            f"warmup={warmup}, threads={threads}"
        )
    samples: list[list[float]] = [[] for _ in runners]
    for _ in range(warmup):
        for run in runners:
            run()
    for r in range(repeats):
        order = range(len(runners)) if r % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            samples[i].append(_timed_call(runners[i]))
    return [_summary(s, threads) for s in samples]


@torch.no_grad()
def interleaved_latency(
    models: Sequence[nn.Module],
    example_input: torch.Tensor,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
) -> list[LatencyResult]:
    """Latency of each model, timed in one loop; round ``r`` runs them in order, reversed on odd ``r``."""
    with torch_threads(threads), eval_mode(*models):
        return interleaved_calls([_eager_runner(m, example_input) for m in models], repeats, warmup, threads)


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
    return Speedup(dense_result, pruned_result, _ratio(dense_result, pruned_result), threads)


def _ratio(dense: LatencyResult, pruned: LatencyResult) -> float:
    return dense.median_ms / pruned.median_ms if pruned.median_ms > 0 else float("inf")


def onnxruntime_speedup(
    dense: nn.Module,
    pruned: nn.Module,
    example_input: torch.Tensor,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
) -> Speedup:
    """As :func:`speedup`, in ONNX Runtime: both models exported (batch axis dynamic), one session
    each of ``threads`` intra-op threads, timed interleaved on ``example_input``."""
    from .export import export_onnx, onnx_session, session_runner

    sessions = [onnx_session(export_onnx(m, example_input), threads) for m in (dense, pruned)]
    with torch.no_grad():
        dense_result, pruned_result = interleaved_calls(
            [session_runner(s, example_input) for s in sessions], repeats, warmup, threads
        )
    return Speedup(dense_result, pruned_result, _ratio(dense_result, pruned_result), threads)


@torch.no_grad()
def backend_speedup(
    dense: nn.Module, pruned: nn.Module, example_input: torch.Tensor, backend: str = "eager", **timing: int
) -> Speedup:
    """:func:`speedup` in the named backend (``eager`` or ``onnxruntime``)."""
    timer = onnxruntime_speedup if check_backend(backend) == "onnxruntime" else speedup
    return timer(dense, pruned, example_input, **timing)


def backend_latency(
    dense: nn.Module, compressed: nn.Module, latency_input: torch.Tensor, repeats: int, backend: str | None
) -> dict[str, Any]:
    """The :class:`~pytest_prune.pipeline.results.MethodResult` fields of the speed-up look: medians,
    their spreads and the backend (``None``: :func:`default_backend`, eager for a model that does
    not export)."""
    chosen = backend or default_backend(latency_input.device.type)
    try:
        timing = backend_speedup(dense, compressed, latency_input, chosen, repeats=repeats)
    except TraceError:
        if backend is not None or chosen == "eager":  # asked for by name: the user hears why
            raise
        chosen = "eager"
        timing = backend_speedup(dense, compressed, latency_input, chosen, repeats=repeats)
    return {
        "latency_dense_ms": timing.dense.median_ms,
        "latency_pruned_ms": timing.pruned.median_ms,
        "latency_dense_iqr_ms": timing.dense.iqr_ms,
        "latency_pruned_iqr_ms": timing.pruned.iqr_ms,
        "latency_backend": chosen,
        "speedup": timing.speedup,
    }
