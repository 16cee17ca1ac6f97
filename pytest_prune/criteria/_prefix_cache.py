"""Run a model from a cut point: compute everything before it once, replay it for many passes.

Greedy criteria (``car``) evaluate many variants of one model that differ only in which channel
of one group is zeroed. Everything computed before the group's producers is the same in every
variant, and so are the producers' own outputs up to the zeroed channel (a conv's or BatchNorm's
output channels do not depend on each other). :class:`PrefixCache` runs the model once up to the
**cut** — the first module call, after the group's first producer has run, that is not one of its
producers (in a plain layer: the consumer conv, or the activation module in between) — keeping
the outputs of the calls that finished before it. Later passes short-circuit those calls: each
returns its stored output (repeated along the batch dimension when several variants are stacked
in one pass) instead of computing. Forward hooks still run on a replayed output, which is how the
caller's channel masks reach the replayed producers. Code between module calls (functional
``F.relu``, additions in a ``forward``) still runs, on the stored outputs, so no surgery or graph
tracing is needed.

Only the *outermost* finished calls are short-circuited (a finished block stands for its layers),
except that a call containing a producer is entered so that the producer's hooks fire; calls still
open at the cut (the model, the stage holding the cut) run normally. The one assumption is the
usual one for hooks: the model calls the same modules in the same order on every pass (no
data-dependent control flow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection

import torch
from torch import nn


class _CutReached(Exception):
    """Raised by the pre-hook of the first cut module: the prefix is recorded, stop the pass."""


@dataclass
class _Call:
    module: str
    parent: int | None
    ended: bool = False
    output: Any = None
    children: list[int] = field(default_factory=list)
    holds_producer: bool = False  # is, or contains, a call of a producer: must be entered


_RUN = object()  # marks a call that must run normally on replay (it was still open at the cut)


def repeat_batch(value: Any, batch: int, copies: int) -> Any:
    """A new copy of ``value`` with every tensor whose first dimension is ``batch`` repeated
    ``copies`` times along it (new tensors always: the model may modify them in place)."""
    if isinstance(value, torch.Tensor):
        if value.dim() >= 1 and value.shape[0] == batch:
            return value.repeat(copies, *([1] * (value.dim() - 1)))
        return value.clone()
    if isinstance(value, tuple):
        return tuple(repeat_batch(v, batch, copies) for v in value)
    if isinstance(value, list):
        return [repeat_batch(v, batch, copies) for v in value]
    return value


class PrefixCache:
    """The module outputs of one batch up to the cut defined by the group's ``producers``."""

    def __init__(self, model: nn.Module, producers: Collection[str], x: torch.Tensor):
        self.model = model
        self.batch = x.shape[0]
        self.replay_plan: dict[str, list[Any]] = {}
        self.reached = self._record(set(producers), x)

    def _record(self, producers: set[str], x: torch.Tensor) -> bool:
        calls: list[_Call] = []
        stack: list[int] = []
        names = {m: n for n, m in self.model.named_modules() if m is not self.model}
        started = [False]  # has a producer been called yet?

        def pre_hook(module, inputs):
            name = names[module]
            if name in producers:
                started[0] = True
                for open_call in stack:
                    calls[open_call].holds_producer = True
            elif started[0]:
                raise _CutReached
            parent = stack[-1] if stack else None
            calls.append(_Call(name, parent, holds_producer=name in producers))
            if parent is not None:
                calls[parent].children.append(len(calls) - 1)
            stack.append(len(calls) - 1)

        def post_hook(module, inputs, output):
            call = calls[stack.pop()]
            # a copy as it is now: in-place operations later in the pass (``out += identity``,
            # ``ReLU(inplace=True)``) must not reach the stored value
            call.ended, call.output = True, repeat_batch(output, self.batch, 1)
            if not call.holds_producer:  # a finished call stands for its children: drop theirs
                for child in call.children:
                    calls[child].output = None

        handles = []
        for module in names:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        try:
            self.model(x)
            reached = False  # the whole pass ran: none of ``cut`` was called
        except _CutReached:
            reached = True
        finally:
            for h in handles:
                h.remove()
        if not reached:
            return False
        hidden = [False] * len(calls)
        for i, call in enumerate(calls):  # parents come before children
            parent = call.parent
            replayed_parent = parent is not None and calls[parent].ended and not calls[parent].holds_producer
            hidden[i] = parent is not None and (hidden[parent] or replayed_parent)
            if not hidden[i]:
                replayed = call.ended and (not call.holds_producer or call.module in producers)
                self.replay_plan.setdefault(call.module, []).append(call.output if replayed else _RUN)
        for entries in self.replay_plan.values():
            for i, e in enumerate(entries):
                if e is None:  # a finished call that returned None: nothing to replay, run it
                    entries[i] = _RUN
        return True

    def run(self, x: torch.Tensor, copies: int = 1) -> Any:
        """One pass of the model on ``x`` (``copies`` stacked copies of the recorded batch, or any
        input of that batch size), with the recorded calls answered from the cache."""
        if not self.reached:
            return self.model(x)
        installed = []
        try:
            for name, entries in self.replay_plan.items():
                module = self.model.get_submodule(name)
                had_own = "forward" in module.__dict__
                installed.append((module, had_own, module.__dict__.get("forward")))
                module.forward = self._stub(module.forward, entries, copies)
            return self.model(x)
        finally:
            for module, had_own, own in installed:
                if had_own:
                    module.forward = own
                else:
                    del module.forward

    def _stub(self, original, entries: list[Any], copies: int):
        count = [0]

        def forward(*args, **kwargs):
            i = count[0]
            count[0] += 1
            if i < len(entries) and entries[i] is not _RUN:
                return repeat_batch(entries[i], self.batch, copies)
            return original(*args, **kwargs)

        return forward
