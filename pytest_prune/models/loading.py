"""Loading weights safely: ``weights_only=True`` unless the user opts in to full pickles."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError


def read_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict (or a ``{'state_dict': ...}`` checkpoint) from ``path``.

    Only tensors and plain containers are unpickled unless ``allow_pickle`` is set: a full pickle
    can run any code, so it must never be the default for a file that came from elsewhere.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist; check --prune-weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path} is not a plain state dict ({str(exc).splitlines()[0]}); if you trust the "
            "file, pass --prune-allow-pickle to load it as a full pickle"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path} cannot be read as a torch checkpoint: it is truncated or corrupt "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds {type(obj).__name__}, not a state dict of tensors")
    # Checkpoints saved from nn.DataParallel carry a 'module.' prefix on every key.
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_weights(model: nn.Module, path: str | Path, allow_pickle: bool = False) -> None:
    load_state(model, read_state_dict(path, allow_pickle), path)


def _shortened(line: str, keys_shown: int = 4) -> str:
    """torch's ``Missing key(s) in state_dict: "a", "b", …`` with the first few keys and a count."""
    keys = re.findall(r'"([^"]+)"', line)
    if len(keys) > keys_shown and ":" in line:
        return f"{line.split(':', 1)[0]}: {', '.join(keys[:keys_shown])}, … ({len(keys)} in all)"
    return line


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load ``state`` (read from ``path``) strictly; the first mismatches in the error if it does not fit."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [_shortened(line.strip()) for line in str(exc).splitlines() if line.strip()]
        details = "; ".join(lines[1:4]) + (f"; … {len(lines) - 4} more" if len(lines) > 4 else "")
        raise WeightsError(
            f"{path} does not fit the model: {lines[0] if lines else exc}"
            f"{' ' + details if details else ''} (is --prune-weights meant for another --prune-model?)"
        ) from None
