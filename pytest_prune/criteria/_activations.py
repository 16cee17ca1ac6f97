"""Where a channel group's channels live as feature maps, and hooks that read them.

Data-driven criteria (``taylor``, ``attribution``) score a channel by the feature map it carries.
A group names its *producers* (the conv, its BatchNorm, every producer of a residual stream); the
map a criterion should read is the output of the **last** producer of each chain (usually the
BatchNorm), or of the activation module right after it when the network has one. A residual stream
has several chains (the stem and every block's last BatchNorm), hence several *feature points* per
group; criteria sum or average over them and say which.

The points are found by one traced forward pass on a single sample: a producer is the end of its
chain when no other producer of the same group reads its output tensor; an activation module
(``nn.ReLU`` and friends) that reads that tensor extends the point to its output. Activations
applied functionally (``F.relu`` in a ``forward``) are invisible to hooks; the point then stays at
the BatchNorm. For the first-order Taylor product this makes no difference (for ReLU,
``y·∂L/∂y = z·∂L/∂z`` with ``y = relu(z)``); criteria that need the rectified map say so.

Capture hooks hand a *clone* of the captured output downstream, so that in-place operations later
in the forward (``out += identity``, ``ReLU(inplace=True)``) cannot overwrite what was captured.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..modes import eval_mode  # noqa: F401  (re-exported for the criteria)

from ..errors import DataError, TraceError
from ..groups import ChannelGroup, GroupMember

# Element-wise activation modules a feature point may extend through (channel positions unchanged).
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
)


@dataclass(frozen=True)
class FeaturePoint:
    """A module call whose output (channels along dim 1) holds a group's channels.

    ``positions[c]`` lists the output channels of ``module`` that belong to channel ``c`` of the
    group; ``call`` says which call of ``module`` in a forward pass (0 unless the module is reused,
    like a block's shared ``ReLU``); ``activated`` says whether ``module`` is an activation module
    (the map is post-activation) rather than the last producer of a chain.
    """

    module: str
    positions: tuple[tuple[int, ...], ...]
    activated: bool = False
    call: int = 0
    reused: bool = False  # the module runs more than once per forward pass

    @property
    def key(self) -> tuple[str, int]:
        return (self.module, self.call)


Tag = tuple[int, int]  # (id, version) of a tensor: the same object, not modified in place since


@dataclass(frozen=True)
class _Call:
    name: str
    call: int  # how many calls of this module came before
    inputs: frozenset[Tag]
    output: Tag | None


def calibration_subset(batches: Sequence[tuple[torch.Tensor, torch.Tensor]], max_samples: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``max_samples`` samples of ``batches`` (all when None), in their batches."""
    out, seen = [], 0
    for x, y in batches:
        if max_samples is not None and seen >= max_samples:
            break
        if max_samples is not None and seen + x.shape[0] > max_samples:
            x, y = x[: max_samples - seen], y[: max_samples - seen]
        out.append((x, y))
        seen += x.shape[0]
    return out


def example_of(batches: Sequence[tuple[torch.Tensor, torch.Tensor]], criterion: str) -> torch.Tensor:
    """One sample of the first calibration batch, for tracing; a clear error when there is none."""
    if not batches or batches[0][0].shape[0] == 0:
        raise DataError(
            f"criterion {criterion!r} needs calibration data and got none: give it batches "
            "(ScoringContext.batches), e.g. from DataBundle.calibration_batches()"
        )
    return batches[0][0][:1]


def _tag(t: object) -> Tag | None:
    return (id(t), t._version) if isinstance(t, torch.Tensor) else None


def _trace_calls(model: nn.Module, example: torch.Tensor) -> list[_Call]:
    """Every module call of one forward pass, in the order they finish, with tags of the tensors
    they read (taken before the call: an in-place module changes its input) and return."""
    calls: list[_Call] = []
    keep: list[object] = []  # holding the tensors keeps their ids unique for the whole pass
    names = {m: n for n, m in model.named_modules() if m is not model}
    open_inputs: dict[nn.Module, list[frozenset[Tag]]] = {}
    counts: dict[str, int] = {}

    def pre_hook(module, inputs):
        keep.append(inputs)
        open_inputs.setdefault(module, []).append(frozenset(t for t in map(_tag, inputs) if t))

    def hook(module, inputs, output):
        keep.append(output)
        name = names[module]
        calls.append(_Call(name, counts.get(name, 0), open_inputs[module].pop(), _tag(output)))
        counts[name] = counts.get(name, 0) + 1

    one_pass(model, example, {m: hook for m in names}, {m: pre_hook for m in names})
    return calls


def one_pass(
    model: nn.Module,
    example: torch.Tensor,
    hooks: Mapping[nn.Module, Callable],
    pre_hooks: Mapping[nn.Module, Callable] | None = None,
) -> None:
    """One forward pass on ``example`` (eval mode, no gradients) with hooks on modules."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks.items()]
    handles += [module.register_forward_pre_hook(hook) for module, hook in (pre_hooks or {}).items()]
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class CallTrace:
    """The module calls of one forward pass, in the order they finish, and each module's first."""

    calls: tuple[_Call, ...]
    first_call: Mapping[str, int]

    def reused(self) -> set[str]:
        return {call.name for call in self.calls if call.call > 0}


def trace_calls(model: nn.Module, example: torch.Tensor) -> CallTrace:
    """Every module call of one forward pass on ``example``: who reads which tensor."""
    calls = tuple(_trace_calls(model, example))
    first_call: dict[str, int] = {}
    for i, call in enumerate(calls):
        first_call.setdefault(call.name, i)
    return CallTrace(calls, first_call)


def chain_ends(
    trace: CallTrace, group: ChannelGroup, every_call: bool = False
) -> list[tuple[int, GroupMember]]:
    """The producers of ``group`` that end a chain (no other producer of the group reads their
    output), with the index of their first call, in forward order.

    With ``every_call``, a producer run more than once (shared weights: one block on two inputs)
    ends a chain at each of its calls, each a separate tensor holding the group's channels."""
    producers = [m for m in group.producers() if m.module in trace.first_call]
    calls = {
        m.module: [i for i, c in enumerate(trace.calls) if c.name == m.module]
        if every_call else [trace.first_call[m.module]]
        for m in producers
    }
    read_by_producer = {t for m in producers for i in calls[m.module] for t in trace.calls[i].inputs}
    ends = []
    for member in producers:
        for index in calls[member.module]:
            made = trace.calls[index].output
            if made is not None and made not in read_by_producer:
                ends.append((index, member))
    return sorted(ends, key=lambda t: t[0])


def first_reader(
    model: nn.Module, trace: CallTrace, index: int, kinds: tuple[type[nn.Module], ...]
) -> _Call | None:
    """The first later call of a module of ``kinds`` that reads the very tensor call ``index``
    returned (not modified in place in between), or None."""
    made = trace.calls[index].output
    if made is None:
        return None
    for later in trace.calls[index + 1 :]:
        if made in later.inputs and isinstance(model.get_submodule(later.name), kinds):
            return later
    return None


def feature_points(
    model: nn.Module, groups: Sequence[ChannelGroup], example: torch.Tensor
) -> dict[str, tuple[FeaturePoint, ...]]:
    """The feature points of every group (see the module docstring), in forward order."""
    trace = trace_calls(model, example)
    reused = trace.reused()
    out: dict[str, tuple[FeaturePoint, ...]] = {}
    for g in groups:
        points = []
        for index, member in chain_ends(trace, g, every_call=True):
            point = FeaturePoint(
                member.module, member.indices, call=trace.calls[index].call, reused=member.module in reused
            )
            activation = first_reader(model, trace, index, ACTIVATIONS)
            if activation is not None:
                point = FeaturePoint(
                    activation.name, member.indices, activated=True, call=activation.call,
                    reused=activation.name in reused,
                )
            points.append(point)
        if not points:
            raise TraceError(
                f"channel group {g.name!r}: none of its producers "
                f"({', '.join(m.module for m in g.producers())}) ran in a forward pass on an input "
                f"of shape {tuple(example.shape)}; check that the groups belong to this model"
            )
        out[g.name] = tuple(points)
    return out


def channel_maps(output: torch.Tensor, positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(N, G, M)``: for each of the group's ``G`` channels, its ``M`` values per sample.

    A channel listed at several output positions has their values side by side along ``M``.
    """
    flat = output.reshape(output.shape[0], output.shape[1], -1)
    if all(len(p) == 1 for p in positions):
        index = torch.as_tensor([p[0] for p in positions], dtype=torch.long, device=output.device)
        return flat.index_select(1, index)
    return torch.stack(
        [flat[:, list(p)].reshape(flat.shape[0], -1) for p in positions], dim=1
    )


@contextmanager
def captured_outputs(
    model: nn.Module, keys: Sequence[tuple[str, int]]
) -> Iterator[dict[tuple[str, int], torch.Tensor]]:
    """Record the output of each (module name, call number) of the latest forward pass.

    The dictionary is emptied when a forward pass of ``model`` starts and filled during it;
    captured tensors keep their autograd history, so ``torch.autograd.grad(loss, captured)`` gives
    the gradient with respect to each map.
    """
    seen: dict[tuple[str, int], torch.Tensor] = {}
    wanted: dict[str, set[int]] = {}
    for name, call in keys:
        wanted.setdefault(name, set()).add(call)
    counts: dict[str, int] = {}

    def start(module, inputs):
        seen.clear()
        counts.clear()

    def make_hook(name: str):
        def hook(module, inputs, output):
            call = counts.get(name, 0)
            counts[name] = call + 1
            if call not in wanted[name] or not isinstance(output, torch.Tensor):
                return None
            seen[(name, call)] = output
            return output.clone()  # downstream in-place ops must not touch what we keep

        return hook

    handles = [model.register_forward_pre_hook(start)]
    handles += [model.get_submodule(n).register_forward_hook(make_hook(n)) for n in wanted]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def point_keys(points: Mapping[str, Sequence[FeaturePoint]]) -> list[tuple[str, int]]:
    """The distinct (module, call) keys of all feature points, in a stable order."""
    return list(dict.fromkeys(p.key for pts in points.values() for p in pts))
