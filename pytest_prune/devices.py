"""Where a run computes: the one parser of device names, and where a model is.

``--prune-device`` and the library's ``device=`` arguments (recovery) take the same names: ``cpu``,
``cuda`` or ``cuda:N`` where CUDA is present, and ``auto`` (CUDA if present, else the CPU). Other
torch devices are refused: the criteria and recovery compute in float64, which ``mps`` lacks, and
``meta`` computes nothing. Nothing here knows pytest.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .errors import SpecError


def available_devices() -> list[str]:
    """The device names this machine accepts, ``auto`` last."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu"] + (["cuda"] + cuda if cuda else []) + ["auto"]


def resolve_device(device: torch.device | str, what: str = "device") -> torch.device:
    """``device`` checked against this machine; ``cuda`` named with its index, so that models
    already there are not copied. ``what`` names the input in the error (``--prune-device``)."""
    text = str(device).strip()
    choices = ", ".join(available_devices())
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(text)
    except (RuntimeError, ValueError):
        raise SpecError(f"{what} {text!r} is not a torch device; use one of {choices}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
            raise SpecError(f"{what} {text!r}: CUDA is not available here ({build}); use one of {choices}")
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= torch.cuda.device_count():
            raise SpecError(f"{what} {text!r}: there is no CUDA device {index} here; use one of {choices}")
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        raise SpecError(f"{what} {text!r}: pytest-prune computes on cpu or cuda only; use one of {choices}")
    return resolved


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without any)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")
