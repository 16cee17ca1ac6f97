"""Portable fingerprints of float tensors: equal on any CPU for the same data, different for other data.

A digest over raw bytes (:mod:`.provenance`) is bit-exact, and floats made by torch's kernels are
not bit-exact across CPUs: ``torch.randn`` with one seed gives other last bits on a CPU with
other vector units (measured: 189,168 of 491,520 values of a 160×3×32×32 draw differ, by at most
2.1e-6, between ``ATEN_CPU_CAPABILITY=default`` and AVX2), and so does a module's default
initialisation under ``torch.manual_seed``. A user whose data or dense model is made that way
would see every baseline refused on another CPU ("the data changed") although nothing did.

A fingerprint summarises a stream of float tensors by numbers that rounding moves by about
1e-6 of their scale and any real change moves by far more:

* ``elements``: how many values, and ``layout``: a digest of the shapes, dtypes and names (exact);
* ``squares``: Σ x² in float64;
* ``projections``: K sums Σ s_k(i, j) · x_ij, x_ij value j of row i (a batch's image, or a whole
  state-dict tensor), with signs s_k(i, j) = a_k(j) · b_k(i) from an integer hash of (k, j) and
  (k, i) -- deterministic, no generator state, the same on every machine.

Rounding errors ε_ij are unrelated to the signs, so a projection moves by about ‖ε‖₂ (1e-6 of
‖x‖₂ for float32 rounding); replacing data moves it by about ‖Δx‖₂: one image of 10,000 replaced
moves it by about 1 % of ‖x‖₂. Two fingerprints match when every projection agrees within
``TOLERANCE · ‖x‖₂`` and Σ x² within ``TOLERANCE`` of itself (1e-4: a hundred times the rounding,
a hundred times below one replaced image in 10,000). A state dict weighs each tensor alike
(:func:`state_dict_fingerprint`), and its tolerance is relative to √(tensors).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..digests import add_tensor

PROJECTIONS = 4  # independent signed sums: a real change must hide in all of them to pass
TOLERANCE = 1e-4  # relative to ‖x‖₂ (projections) and to Σ x² (squares); see the module docstring
COLUMN_CHUNK = 1 << 20  # columns whose signs are made at once (32 MB of float64 signs)
STATE_ROW = 4096  # values per row of a state-dict tensor
ROW_CHUNK = 64  # rows (images) converted to float64 at once
KEPT_WIDTH = 1 << 18  # an image this wide or narrower keeps its column signs for the next batch
_MIX = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio constant of splitmix64


def _signs(index: np.ndarray, k: int, salt: int) -> np.ndarray:
    """±1.0 per index, from splitmix64 of (index, k, salt): a fixed pseudo-random sign pattern."""
    z = index.astype(np.uint64) * _MIX + np.uint64((k * 2 + salt) * 0x632BE59BD9B4E019 & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return 1.0 - 2.0 * (z & np.uint64(1)).astype(np.float64)


class Fingerprint:
    """Accumulates the fingerprint of rows of floats, added in order (:meth:`add`)."""

    def __init__(self) -> None:
        self.layout = hashlib.sha256()
        self.elements = 0
        self.rows = 0
        self.terms = 0  # tensors added each at unit weight (state dicts); 0: values at their own weight
        self.squares = 0.0
        self.projections = np.zeros(PROJECTIONS, dtype=np.float64)
        self._columns: dict[int, np.ndarray] = {}  # width → (width, K) signs a_k(j)

    def _column_signs(self, start: int, width: int) -> np.ndarray:
        """(width, K) signs a_k(j) for columns start … start + width − 1; a batch's (small) are kept."""
        if start == 0 and width in self._columns:
            return self._columns[width]
        j = np.arange(start, start + width)
        signs = np.stack([_signs(j, k, 0) for k in range(PROJECTIONS)], axis=1)
        if start == 0 and width <= KEPT_WIDTH:
            self._columns[width] = signs
        return signs

    def add_layout(self, text: str) -> None:
        """Exact parts (names, shapes, dtypes, integer tensors' bytes) go into the layout digest."""
        self.layout.update(text.encode())

    def add(self, tensor: torch.Tensor, name: str = "") -> None:
        """A batch of rows (first dimension) of a float tensor, or an exact (integer, bool) tensor."""
        tensor = tensor.detach().cpu()
        self.add_layout(name)
        if not tensor.is_floating_point():
            add_tensor(self.layout, tensor)  # exact: dtype, shape and bytes
            return
        self.add_layout(f"{tensor.dtype}{tuple(tensor.shape)}")
        rows = tensor.reshape(len(tensor) if tensor.dim() > 1 else 1, -1)
        for start in range(0, len(rows), ROW_CHUNK):  # float64 copies of a few rows at a time
            chunk = rows[start : start + ROW_CHUNK]
            chunk = chunk if chunk.dtype in (torch.float16, torch.float32, torch.float64) else chunk.float()
            self._add_rows(chunk.numpy().astype(np.float64))

    def _add_rows(self, rows: np.ndarray) -> None:
        i = np.arange(self.rows, self.rows + len(rows))
        row_signs = np.stack([_signs(i, k, 1) for k in range(PROJECTIONS)], axis=1)  # (rows, K)
        for start in range(0, max(rows.shape[1], 1), COLUMN_CHUNK):  # a large weight: signs chunk by chunk
            part = rows[:, start : start + COLUMN_CHUNK]
            self.projections += ((part @ self._column_signs(start, part.shape[1])) * row_signs).sum(axis=0)
        flat = rows.reshape(-1)
        self.squares += float(flat @ flat)
        self.elements += rows.size
        self.rows += len(rows)

    def record(self) -> dict[str, Any]:
        return {
            "elements": self.elements,
            "layout": self.layout.hexdigest()[:16],
            "squares": self.squares,
            "projections": [float(p) for p in self.projections],
            "terms": self.terms,
        }


def batches_fingerprint(batches: Iterable) -> dict[str, Any]:
    """Fingerprint of a split's ``(images, labels)`` batches, in order."""
    fingerprint = Fingerprint()
    for images, labels in batches:
        fingerprint.add(torch.as_tensor(images), "images")
        fingerprint.add(torch.as_tensor(labels), "labels")
    return fingerprint.record()


def state_dict_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """Fingerprint of every parameter and buffer, by name and shape.

    Each float tensor's projections are divided by its own norm before they are summed, so every
    tensor weighs the same (``terms`` counts them, and the tolerance is relative to √terms): a
    10-value bias nudged by 1e-3 is a change, although it is nothing beside the model's norm. Its
    values are cut into rows of :data:`STATE_ROW` (the last padded with zeros, which add nothing),
    so that one set of column signs serves every tensor (a row per tensor made 25 M signs for a
    ResNet-50), and its rows are numbered after the previous tensor's, so that two tensors swapped
    between names change the sums."""
    fingerprint = Fingerprint()
    for name, tensor in sorted(model.state_dict().items()):
        if not tensor.is_floating_point():
            fingerprint.add(tensor.reshape(-1), name)
            continue
        flat = tensor.detach().reshape(-1)
        flat = torch.cat([flat, flat.new_zeros((-len(flat)) % STATE_ROW)])
        part = Fingerprint()
        part.rows, part._columns = fingerprint.rows, fingerprint._columns
        part.add(flat.reshape(-1, STATE_ROW))
        fingerprint.add_layout(f"{name}{tensor.dtype}{tuple(tensor.shape)}")
        if part.squares > 0.0:
            fingerprint.projections += part.projections / math.sqrt(part.squares)
        fingerprint.squares += part.squares
        fingerprint.elements += part.elements
        fingerprint.rows = part.rows
        fingerprint.terms += 1
    return fingerprint.record()


def fingerprints_match(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two fingerprints describe the same values up to rounding (False if either is absent)."""
    if not a or not b or a.get("layout") != b.get("layout") or a.get("elements") != b.get("elements"):
        return False
    squares = max(float(a["squares"]), float(b["squares"]))
    if abs(float(a["squares"]) - float(b["squares"])) > TOLERANCE * squares:
        return False
    if a.get("terms", 0) != b.get("terms", 0):
        return False
    scale = TOLERANCE * math.sqrt(float(a.get("terms") or squares)) + 1e-300
    return all(abs(float(p) - float(q)) <= scale for p, q in zip(a["projections"], b["projections"]))
