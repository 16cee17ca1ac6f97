"""What the traced forward pass did: how often each layer ran, the autograd window of each call,
which autograd nodes are model outputs, and a forward that never lets an exception out (Torch-
Pruning leaves its hooks on the model if the forward raises)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from .channel_cuts import record_channel_reshapes


@dataclass
class Recording:
    """What our forward function saw: call counts, outputs and the first problem."""

    calls: Counter = field(default_factory=Counter)
    # per module, the autograd sequence numbers just before and after each of its calls: the
    # autograd nodes numbered in between are the operations that call ran
    windows: dict[nn.Module, list[tuple[int, int]]] = field(default_factory=dict)
    output_grad_fns: set = field(default_factory=set)
    problem: str | None = None


def _autograd_clock() -> int:
    """The sequence number of a new autograd node: autograd numbers the nodes it creates in one
    thread in order, so the nodes numbered between two readings are those created in between."""
    with torch.enable_grad():
        return (torch.zeros((), requires_grad=True) * 1).grad_fn._sequence_nr()


def _output_leaves(out: Any) -> Iterable[Any]:
    if isinstance(out, (list, tuple)):
        for item in out:
            yield from _output_leaves(item)
    elif isinstance(out, dict):
        for item in out.values():
            yield from _output_leaves(item)
    else:
        yield out


def recording_forward(recording: Recording, watched: list[nn.Module], reshapes: record_channel_reshapes):
    """A forward_fn for Torch-Pruning that records, checks, and never raises."""
    started: dict[nn.Module, list[int]] = {}

    def start_call(module, inputs):
        started.setdefault(module, []).append(_autograd_clock())

    def count_call(module, inputs, output):
        recording.calls[module] += 1
        start = started[module].pop()
        recording.windows.setdefault(module, []).append((start, _autograd_clock()))

    def forward(model: nn.Module, x: torch.Tensor):
        hooks = [m.register_forward_pre_hook(start_call) for m in watched]
        hooks += [m.register_forward_hook(count_call) for m in watched]
        try:
            with reshapes:
                out = model(x)
        except Exception as exc:  # reported after Torch-Pruning removed its hooks
            recording.problem = (
                f"the forward pass of {type(model).__name__} on an input of shape "
                f"{tuple(x.shape)} raised {type(exc).__name__}: {exc}; pass an example input "
                "the model accepts"
            )
            return x.sum()
        finally:
            for h in hooks:
                h.remove()
        leaves = list(_output_leaves(out))
        bad = [leaf for leaf in leaves if not isinstance(leaf, torch.Tensor)]
        if bad or not leaves:
            recording.problem = (
                f"{type(model).__name__}.forward returns {type(out).__name__} holding "
                f"{type(bad[0]).__name__ if bad else 'nothing'}: the tracer follows tensors "
                "only; return a tensor (or a tuple/list/dict of tensors)"
            )
            return x.sum()
        detached = [leaf for leaf in leaves if leaf.grad_fn is None]
        if detached:
            recording.problem = (
                f"an output of {type(model).__name__}.forward (shape {tuple(detached[0].shape)}) "
                "is not connected to the input by autograd: the tracer follows autograd, so "
                "forward must not use torch.no_grad(), .detach(), .item() or numpy on the way"
            )
            return x.sum()
        recording.output_grad_fns = {leaf.grad_fn for leaf in leaves}
        return out

    return forward
