"""The dense half of ``lsq``, kept for the next ``lsq`` of the same run: one dense pass serves every
method of the run.

What ``lsq``'s dense pass captures (:mod:`.lsq_dense`: the dense outputs, at sampled positions, of
every layer any plan over the run's groups can refit, and each residual tail's other operand there)
depends only on the dense model, the calibration images, the seed, the positions per image, the
captured layers and the residual tails; not on the plan, because the layers are those of every
plan, and not on which output channels survive, because the capture is kept at full width and each
refit takes its layers' surviving columns afterwards (the same values as selecting first).
``l1-0.3+lsq``, ``l1-0.5+lsq``, ``random-0.5+lsq`` and a global plan that spares a whole group all
read the first one's pass, with bit-identical weights (``tests/recovery/test_lsq_cache.py``).

The cache is keyed by the dense model *object* (weakly: it goes with the model), and within it by
the state's tensor identities and version counters (an in-place change of a weight, a loaded
state dict or a new parameter all miss), a digest of the calibration images' bytes and the
settings above. It keeps the :data:`KEPT_ENTRIES` most recent captures per model, each only while
under :data:`MAX_BYTES`.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..digests import tensors_digest

KEPT_ENTRIES = 3  # captures kept per dense model (most recent first out last)
MAX_BYTES = 512 * 2**20  # a capture larger than this is not kept

_CACHE: "weakref.WeakKeyDictionary[nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()


@dataclass
class Capture:
    """One layer's dense capture at full width."""

    positions: torch.Tensor | None
    available: int
    targets: list[torch.Tensor]
    calls: int
    captured: int


def state_signature(model: nn.Module) -> tuple:
    """Which tensors the model holds, and how often each was changed in place."""
    return tuple((name, id(t), t._version) for name, t in model.state_dict(keep_vars=True).items())


def capture_key(dense: nn.Module, batches: Sequence[torch.Tensor], settings: tuple, fits: Sequence, tails: dict) -> tuple:
    """What the dense pass's result depends on (see the module docstring)."""
    return (
        state_signature(dense), tensors_digest((f"batch{i}", x) for i, x in enumerate(batches)), settings,
        tuple(f.name for f in fits),
        tuple(sorted((name, tail.where) for name, tail in tails.items())),
    )


def holds(dense: nn.Module, key: tuple) -> bool:
    """Whether a capture of ``key`` is kept."""
    entries = _CACHE.get(dense)
    return entries is not None and key in entries


def restore(dense: nn.Module, key: tuple, fits: Sequence, tails: dict) -> bool:
    """Fill ``fits`` and ``tails`` from a kept capture of ``key``; False when there is none."""
    entries = _CACHE.get(dense)
    if entries is None or key not in entries:
        return False
    layers, others = entries[key]
    entries.move_to_end(key)
    _fill(fits, tails, layers, others)
    return True


def fill(fits: Sequence, tails: dict, layers: Sequence, captured_tails: dict) -> None:
    """Fill ``fits`` and ``tails`` (some of those captured) from a capture just taken."""
    _fill(fits, tails, {layer.name: layer for layer in layers}, {n: t.dense_other for n, t in captured_tails.items()})


def _fill(fits: Sequence, tails: dict, layers: dict, others: dict) -> None:
    for fit in fits:
        kept = layers[fit.name]
        fit.positions, fit.available = kept.positions, kept.available
        fit.targets, fit.calls, fit.captured = list(kept.targets), kept.calls, kept.captured
    for name, tail in tails.items():
        tail.dense_other = list(others[name])


def keep(dense: nn.Module, key: tuple, layers: Sequence, tails: dict) -> None:
    """Keep what the dense pass captured in ``layers`` and ``tails`` (at full width) for ``key``."""
    kept = {f.name: Capture(f.positions, f.available, list(f.targets), f.calls, f.captured) for f in layers}
    others = {name: list(tail.dense_other) for name, tail in tails.items()}
    size = sum(t.numel() * t.element_size() for c in kept.values() for t in c.targets)
    size += sum(t.numel() * t.element_size() for parts in others.values() for t in parts)
    if size > MAX_BYTES:
        return
    entries = _CACHE.setdefault(dense, OrderedDict())
    entries[key] = (kept, others)
    while len(entries) > KEPT_ENTRIES:
        entries.popitem(last=False)


def select_kept(fits: Sequence, tails: dict) -> None:
    """Cut the full-width captures down to each layer's surviving dense outputs (``kept_outputs``)."""
    kept = {fit.name: fit.kept_outputs for fit in fits}
    for fit in fits:
        if fit.kept_outputs is not None:
            fit.targets = [t[:, fit.kept_outputs] for t in fit.targets]
    for name, tail in tails.items():
        columns = kept.get(tail.layer)
        if columns is not None:
            tail.dense_other = [t[:, columns] for t in tail.dense_other]
