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

Functional code before the group's first producer (``F.relu``, ``F.max_pool2d``, ``flatten``
between module calls, common in small CNNs) is answered from the cache too: a second recording
pass, itself replayed, notes every torch function call made before the first producer starts
(a :class:`~torch.overrides.TorchFunctionMode`), and later passes return the stored result of each
call that derives from the batch and returns a tensor, in the same order, instead of computing it.
Without this, a fully-connected group behind a conv stack recomputed every pooling of the stack
for each candidate (measured on issue 16's 3-conv + 2-fc CIFAR CNN, one thread: pooling, ReLU
and the copies they read took 92 % of the time of the first fc group's candidates). In-place calls
(``add_``, ``inplace=True``, ``out=``) and calls on parameters alone still run.

Only the *outermost* finished calls are short-circuited (a finished block stands for its layers),
except that a call containing a producer is entered so that the producer's hooks fire; calls still
open at the cut (the model, the stage holding the cut) run normally. The one assumption is the
usual one for hooks: the model calls the same modules and torch functions in the same order on
every pass (no data-dependent control flow), and code before the first producer does not rely on
an in-place change reaching another tensor through a view (stored results are fresh copies).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import TraceError
from ..groups import ChannelGroup


# Candidates stacked per pass: the stored tensors of one pass held to about 4 MB. After a late
# group (an fc layer) a pass computes little and costs mostly its Python calls, so more copies
# per pass pay; after an early one the stack stays at the scorer's own copies.
STACK_ELEMENTS = 1 << 20
MAX_COPIES = 64


def stack_copies(prefix: "PrefixCache", base: int) -> int:
    """Candidates per pass over ``prefix``: ``base``, or more while its stored outputs of one
    stacked pass stay within :data:`STACK_ELEMENTS`."""
    stored = [e for entries in prefix.replay_plan.values() for e in entries if isinstance(e, torch.Tensor)]
    return copies_within(max((t.numel() for t in stored), default=0), base)


def copies_within(per_copy: int, base: int) -> int:
    """``base``, or as many copies of ``per_copy`` elements as :data:`STACK_ELEMENTS` holds (at
    most :data:`MAX_COPIES`); ``per_copy`` 0 (nothing stored): ``base``."""
    return base if per_copy <= 0 else max(base, min(MAX_COPIES, STACK_ELEMENTS // per_copy))


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

    def __init__(self, model: nn.Module, producers: Collection[str], x: torch.Tensor, functions: bool = True):
        """``functions=False`` replays module calls only (what this cache did before; kept so that
        ``benchmarks/car_ci.py`` can time both side by side)."""
        self.model = model
        self.batch = x.shape[0]
        self.replay_plan: dict[str, list[Any]] = {}
        self.producers = set(producers)
        self.reached = self._record(self.producers, x)
        # per torch function call before the first producer: its stored result, or _RUN
        self.needed: set[Any] = set()  # stored results (op index, or (module, call)) read by computed calls
        self.op_funcs: list[Any] = []
        self.op_plan: list[Any] = self._record_ops(x) if self.reached and functions else []
        if not functions:
            self.needed = _EVERYTHING

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
        with _OpReplay(self.op_plan, self.op_funcs, self.batch, copies, self.needed) as ops, self._stubs(copies, ops):
            return self.model(x)

    @contextmanager
    def _stubs(self, copies: int, ops: "_OpReplay | _OpRecord"):
        """Module calls answered from :attr:`replay_plan`; ``ops`` learns when the first producer
        starts (a pre-hook: it also fires for a replayed producer) and which tensors came from here."""
        installed, handles = [], []
        try:
            for name in self.producers:
                handles.append(self.model.get_submodule(name).register_forward_pre_hook(ops.stop))
            for name, entries in self.replay_plan.items():
                module = self.model.get_submodule(name)
                had_own = "forward" in module.__dict__
                installed.append((module, had_own, module.__dict__.get("forward")))
                module.forward = self._stub(name, module.forward, entries, copies, ops)
            yield
        finally:
            for h in handles:
                h.remove()
            for module, had_own, own in installed:
                if had_own:
                    module.forward = own
                else:
                    del module.forward

    def _stub(self, name: str, original, entries: list[Any], copies: int, ops: "_OpReplay | _OpRecord"):
        count = [0]

        def forward(*args, **kwargs):
            i = count[0]
            count[0] += 1
            if i < len(entries) and entries[i] is not _RUN:
                return ops.module_output((name, i), entries[i], copies)
            return original(*args, **kwargs)

        return forward

    def _record_ops(self, x: torch.Tensor) -> list[Any]:
        """The torch function calls of a replayed pass before the first producer starts."""
        with _OpRecord(x) as ops, self._stubs(1, ops):
            self.model(x)
        self.needed, self.op_funcs = ops.needed, ops.funcs
        return [e if e is _RUN or i in ops.needed else _Placeholder(e) for i, e in enumerate(ops.plan)]


def _flat(values) -> list:
    out = []
    for v in values:
        if isinstance(v, (tuple, list)):
            out.extend(_flat(v))
        elif isinstance(v, dict):
            out.extend(_flat(list(v.values())))
        else:
            out.append(v)
    return out


def _in_place(func, kwargs) -> bool:
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or kwargs.get("inplace") is True or "out" in kwargs


# calls that read only a tensor's metadata: a placeholder of the right shape answers them
_METADATA = {"__get__", "size", "dim", "numel", "ndimension", "__len__", "stride", "is_contiguous"}


class _Everything(set):
    """Every stored result is read: module calls replayed as copies, no placeholders."""

    def __contains__(self, key) -> bool:
        return True


_EVERYTHING = _Everything()


class _Placeholder:
    """A stored result no computed call reads: replayed as an empty tensor of its shape."""

    def __init__(self, value: torch.Tensor):
        self.shape, self.dtype, self.device = value.shape, value.dtype, value.device

    def make(self, batch: int, copies: int) -> torch.Tensor:
        shape = (self.shape[0] * copies, *self.shape[1:]) if self.shape and self.shape[0] == batch else self.shape
        return torch.empty(shape, dtype=self.dtype, device=self.device)


class _OpRecord(TorchFunctionMode):
    """Records, per torch function call until the first producer starts, a copy of the result
    where the call reads a tensor derived from the batch and returns a tensor; _RUN otherwise.
    Notes which stored results a call that will still compute reads (``needed``): the others are
    replayed as placeholders, so that the skipped part of the pass allocates and copies nothing."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.plan: list[Any] = []
        self.funcs: list[Any] = []  # the function of each recorded call, checked on replay
        self.batch = x.shape[0]
        # id → (what produced it, the tensor): held, so that ids are not reused during the pass
        self._derived: dict[int, tuple[Any, torch.Tensor]] = {id(x): (None, x)}
        self.needed: set[Any] = set()
        self._stopped = False

    def module_output(self, key: tuple[str, int], entry: Any, copies: int):
        with torch._C.DisableTorchFunction():  # our own calls are not the model's: not recorded
            value = repeat_batch(entry, self.batch, copies)
        for t in _flat([value]):
            if isinstance(t, torch.Tensor):
                self._derived[id(t)] = (key, t)
        return value

    def stop(self, module, inputs):
        self._stopped = True  # the pass goes on: what the rest reads must be marked needed

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [t for t in _flat([args, kwargs]) if isinstance(t, torch.Tensor)]
        read = [self._derived[id(t)][0] for t in tensors if id(t) in self._derived]
        skip = not self._stopped and bool(read) and isinstance(out, torch.Tensor) and not _in_place(func, kwargs)
        if not skip and not (getattr(func, "__name__", "") in _METADATA and not isinstance(out, torch.Tensor)):
            self.needed.update(k for k in read if k is not None)  # this call computes on replay
        if self._stopped:
            return out
        self.funcs.append(func)
        if skip:
            self._derived[id(out)] = (len(self.plan), out)
            self.plan.append(repeat_batch(out, self.batch, 1))
        else:
            self.plan.append(_RUN)
        return out


class _OpReplay(TorchFunctionMode):
    """Answers the recorded calls (in order, until the first producer starts) from the cache."""

    def __init__(self, plan: list[Any], funcs: list[Any], batch: int, copies: int, needed: set[Any]):
        super().__init__()
        self.plan, self.funcs, self.batch, self.copies, self.needed = plan, funcs, batch, copies, needed
        self.calls = 0
        self._stopped = False

    def module_output(self, key: tuple[str, int], entry: Any, copies: int):
        with torch._C.DisableTorchFunction():  # as when recorded: the model's calls only
            if key in self.needed or not isinstance(entry, torch.Tensor):
                return repeat_batch(entry, self.batch, copies)
            return _Placeholder(entry).make(self.batch, copies)

    def stop(self, module, inputs):
        self._stopped = True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._stopped and self.calls < len(self.plan):
            entry, recorded = self.plan[self.calls], self.funcs[self.calls]
            self.calls += 1
            if func is not recorded:
                raise TraceError(
                    f"CAR's prefix replay: the model called {getattr(func, '__name__', func)} where the "
                    f"recorded pass called {getattr(recorded, '__name__', recorded)} (control flow that "
                    "depends on the data before a group's producers); score with fast=False"
                )
            if isinstance(entry, _Placeholder):
                return entry.make(self.batch, self.copies)
            if entry is not _RUN:
                return repeat_batch(entry, self.batch, self.copies)
        return func(*args, **kwargs)


class ChannelMask:
    """Forward hooks that zero, in copy j of a stacked batch, the channels ``zeroed[j]`` of a group
    at every one of its producers (replayed ones included): candidates scored side by side in one
    replayed pass."""

    def __init__(self, model: nn.Module, group: ChannelGroup, zeroed: Sequence[Sequence[int]], batch: int):
        self.handles = []
        for member in group.producers():
            module = model.get_submodule(member.module)
            self.handles.append(module.register_forward_hook(self._hook(member.indices, zeroed, batch)))

    @staticmethod
    def _hook(indices, zeroed, batch):
        masks: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() < 2:
                return None
            key = (output.shape[1], output.device, output.dtype)
            if key not in masks:
                m = torch.ones(len(zeroed), output.shape[1], dtype=output.dtype, device=output.device)
                for j, channels in enumerate(zeroed):
                    m[j, [i for c in channels for i in indices[c]]] = 0
                m = m.repeat_interleave(batch, dim=0)
                masks[key] = m.reshape(m.shape + (1,) * (output.dim() - 2))
            return output * masks[key]

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
