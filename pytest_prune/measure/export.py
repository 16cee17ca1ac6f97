"""ONNX export of a compressed model, and how far ONNX Runtime's outputs are from PyTorch's.

Teams ship the exported model, not the eager one; a pruned model that exports wrongly (a layer whose
forward takes another branch under export, a BatchNorm whose statistics no longer fit its width) or
not at all is a broken release even when every eager check holds. The path is pinned, so that the
gate means the same thing on every machine:

* ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter, at opset
  :data:`ONNX_OPSET`, with a dynamic batch axis (exported at one batch size, checked at another, so
  the axis is exercised). Chosen over torch 2.14's default ``torch.export``-based exporter because a
  gate exports every method of a run: the TorchScript exporter takes 0.06 s for LeNet-5 where the
  dynamo one takes 2.8 s (same machine, warm), writes one self-contained file (the dynamo one puts
  the weights beside it in ``.onnx.data``), and needs no ``onnxscript``. It is deprecated since torch
  2.9; when torch drops it, :func:`export_onnx` is the one place to switch (``dynamo=True``,
  ``dynamic_shapes`` instead of ``dynamic_axes``). Its deprecation warning is silenced here: the
  choice is deliberate, and the warning would repeat once per method.
* the model is exported in memory (no file is written); ``onnx_bytes`` is the file it would be;
* ONNX Runtime's CPU provider, one thread, all graph optimisations (the deployed configuration).

The measured value (:func:`export_difference`) is ``max |ORT(x) - PyTorch(x)|`` over the inputs,
divided by ``max(1, max |PyTorch(x)|)``: absolute for outputs of unit scale, relative for larger ones,
so that a model with large logits is not failed for float32 rounding alone.

``onnx`` and ``onnxruntime`` are an optional extra (``pip install -e ".[onnx]"``): without them
:func:`onnx_available` is False and the gate item is skipped with :data:`ONNX_HINT`.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import TraceError
from ..modes import eval_mode

ONNX_OPSET = 17  # every op of the zoo's CNNs exists at 17; onnxruntime 1.16+ runs it
ONNX_HINT = 'ONNX export and ONNX Runtime need the onnx extra: pip install -e ".[onnx]"'
# Beyond this the ONNX file computes another function, whatever the baseline says: a baseline
# written for a broken export must not let it pass (float32 rounding gives 1e-7 to 1e-6).
EXPORT_LIMIT = 1e-3
INPUT_NAME, OUTPUT_NAME = "input", "output"


def onnx_available() -> bool:
    """Whether the exporter's and the runtime's packages are installed (nothing is imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


@dataclass(frozen=True)
class ExportCheck:
    """What exporting one model measured."""

    max_diff: float  # max |ORT - PyTorch|, relative once the outputs exceed 1 (see the module doc)
    onnx_bytes: int  # size of the exported file


def export_onnx(model: nn.Module, example_input: torch.Tensor) -> bytes:
    """``model`` (in eval mode) as an ONNX file, with a dynamic batch axis; a model the exporter
    refuses raises :class:`TraceError` with the exporter's reason in one line."""
    buffer = io.BytesIO()
    example = example_input.detach().cpu()
    try:
        with eval_mode(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
            torch.onnx.export(
                _on_cpu(model), (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    except Exception as exc:  # the exporter's own error, for the user to read
        raise TraceError(
            f"{type(model).__name__} cannot be exported to ONNX (torch.onnx.export, opset "
            f"{ONNX_OPSET}): {type(exc).__name__}: {_first_line(exc)}; replace the layer it names "
            "with exportable operations, or deselect with -k 'not export_equivalence'"
        ) from None
    return buffer.getvalue()


def _on_cpu(model: nn.Module) -> nn.Module:
    """ONNX Runtime here runs on the CPU: a CUDA model is exported from a CPU copy."""
    first = next(iter(model.parameters()), None)
    if first is None or first.device.type == "cpu":
        return model
    import copy

    return copy.deepcopy(model).cpu()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def onnx_session(model_bytes: bytes, threads: int = 1, profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime CPU session over ``model_bytes``: ``threads`` intra-op threads, one inter-op
    thread, sequential execution, every graph optimisation; with ``profile_prefix``, ORT's profiler
    on (per-node times, written by ``session.end_profiling()``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no optimiser chatter in a test run
    try:
        return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise TraceError(
            f"ONNX Runtime cannot load the exported model: {type(exc).__name__}: {_first_line(exc)}"
        ) from None


def session_runner(session: Any, inputs: torch.Tensor) -> Callable[[], Any]:
    """A call of ``session`` on ``inputs`` (converted once, so a timed call converts nothing)."""
    feed = {INPUT_NAME: inputs.detach().cpu().numpy()}
    return lambda: session.run(None, feed)


def export_difference(model: nn.Module, example_input: torch.Tensor, inputs: torch.Tensor) -> ExportCheck:
    """Export ``model`` at ``example_input``'s batch, run it with ONNX Runtime on ``inputs`` (another
    batch size where they differ) and compare with PyTorch's outputs on the same inputs."""
    model_bytes = export_onnx(model, example_input)
    session = onnx_session(model_bytes)
    try:
        exported = session_runner(session, inputs)()[0]
    except Exception as exc:
        raise TraceError(
            f"the exported ONNX model fails in ONNX Runtime on a batch of {inputs.shape[0]}: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from None
    with eval_mode(model), torch.no_grad():
        expected = model(inputs).detach().cpu().double().numpy()
    if exported.shape != expected.shape:
        raise TraceError(
            f"the exported ONNX model gives outputs of shape {exported.shape}, PyTorch {expected.shape}"
        )
    scale = max(1.0, float(np.abs(expected).max()))
    return ExportCheck(float(np.abs(exported.astype(np.float64) - expected).max()) / scale, len(model_bytes))


def export_look(model: nn.Module, example_input: torch.Tensor, inputs: torch.Tensor) -> dict[str, Any]:
    """The :class:`~pytest_prune.pipeline.results.MethodResult` fields of the export check; a model
    that cannot be exported, or whose export differs by more than :data:`EXPORT_LIMIT`, gets its
    reason in ``export_error`` (the gate item raises it, baseline or not)."""
    try:
        check = export_difference(model, example_input, inputs)
    except TraceError as exc:
        return {"export_error": str(exc)}
    values = {"export_max_diff": check.max_diff, "onnx_bytes": check.onnx_bytes}
    if check.max_diff > EXPORT_LIMIT:
        values["export_error"] = (
            f"the ONNX export of {type(model).__name__} computes another function: ONNX Runtime's "
            f"outputs differ from PyTorch's by {check.max_diff:.3g} (relative), above {EXPORT_LIMIT:g}; "
            "look for a forward that branches under export or an in-place write the exporter drops"
        )
    return values
