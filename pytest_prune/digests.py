"""Bit-exact SHA-256 of tensors: one byte layout (dtype, shape, raw bytes) for every digest the
package takes -- the provenance digests stored in baselines (:mod:`pytest_prune.pipeline.provenance`),
the exact parts of a fingerprint, and the in-process cache keys of CAR's greedy sequence and of
``lsq``'s dense capture."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def add_tensor(hasher: "hashlib._Hash", tensor: torch.Tensor) -> None:
    """Feed ``tensor``'s dtype, shape and bytes to ``hasher`` (the stored digests' layout: keep it)."""
    tensor = tensor.detach().cpu()
    hasher.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    flat = tensor.contiguous().reshape(-1)  # a 0-d tensor cannot be viewed as bytes
    # the array itself, not a bytes copy of it: a batch of large images is hundreds of MB
    hasher.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")


def tensors_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 (hex) of named tensors, in order."""
    hasher = hashlib.sha256()
    for name, tensor in named:
        hasher.update(f"{name};".encode())
        add_tensor(hasher, tensor)
    return hasher.hexdigest()
