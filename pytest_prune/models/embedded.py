"""The embedded defaults' trained weights, shipped as package data.

``lenet5`` (digits) and ``lenet5-colour`` (colour-digits) are built with these weights, read with
``torch.load(weights_only=True)``: no training at first use, no cache, and the same dense model on
every machine, so the committed baselines give the same verdicts everywhere. The files were made
by :mod:`pytest_prune.models.lenet5_recipe` (``python -m pytest_prune.models.lenet5_recipe --write``);
``manifest.json`` beside them records each file's digest, held-out top-1 and recipe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import WeightsError
from .loading import read_state_dict

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"
# model name → file in WEIGHTS_DIR
EMBEDDED: dict[str, str] = {"lenet5": "lenet5-digits.pt", "lenet5-colour": "lenet5-colour-digits.pt"}


def manifest() -> dict:
    return json.loads((WEIGHTS_DIR / MANIFEST).read_text(encoding="utf-8"))


def embedded_weights(name: str) -> dict[str, torch.Tensor]:
    """The shipped state dict of embedded model ``name``, checked against the manifest's digest."""
    path = WEIGHTS_DIR / EMBEDDED[name]
    expected = manifest()[name]["sha256"]
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise WeightsError(
            f"the shipped weights of {name!r} ({path}) are missing or damaged (sha256 differs from "
            f"{WEIGHTS_DIR / MANIFEST}); reinstall pytest-prune, or remake them with "
            "`python -m pytest_prune.models.lenet5_recipe --write`"
        )
    return read_state_dict(path)  # weights_only=True
