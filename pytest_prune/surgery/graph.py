"""Tracing a model into Torch-Pruning's dependency graph, safely.

Torch-Pruning traces by running the model once and following autograd. Its tracer has traps that
this module closes:

* it calls ``model.eval()`` and leaves the model there: we restore every module's own mode;
* if the forward raises, its hooks stay on the model: our forward never lets an exception out,
  and the error is raised once Torch-Pruning has cleaned up;
* it silently ignores layers the example input does not reach (data-dependent control flow) or
  whose result never reaches an output: pruning their neighbours would break them later, so we
  refuse;
* it has no notion of the model's inputs and outputs being fixed, and gives the input no node of
  its own: we hand it the input as an "unwrapped parameter" (so that channels tied to the input are
  visible, and ``cat([x, conv(x)])`` gets its offsets right) and record which nodes produce an
  output, so that channels tied to either are never removed;
* it prunes only the tensors of layers it has a pruner for (and parameters it sees in autograd):
  a layer of another type that holds one value per channel (torchvision's ``FrozenBatchNorm2d``,
  whose statistics are buffers) keeps its old width while the conv before it shrinks. We refuse
  such layers; one named in ``ignore`` is allowed, and every channel that meets it is kept.
"""

from __future__ import annotations

import copy

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import Node

from ..errors import TraceError
from ..models.cifar_resnet import PadShortcut
from ..modes import modes_kept
from .channel_cuts import (
    attach,
    guard_reshape_mapping,
    install_split_mappings,
    install_unflatten_mappings,
    kept_cuts,
    record_channel_reshapes,
)
from .concat_mapping import complete_concat_mappings
from .shortcut_pruner import PadShortcutPruner, install_shortcut_mappings

Role = Literal["producer", "consumer"]


@dataclass
class _Recording:
    """What our forward function saw: call counts, outputs and the first problem."""

    calls: Counter = field(default_factory=Counter)
    # per module, the autograd sequence numbers just before and after each of its calls: the
    # autograd nodes numbered in between are the operations that call ran
    windows: dict[nn.Module, list[tuple[int, int]]] = field(default_factory=dict)
    output_grad_fns: set = field(default_factory=set)
    problem: str | None = None


@dataclass
class TracedModel:
    """A model's dependency graph with the facts Torch-Pruning does not keep."""

    model: nn.Module
    graph: tp.DependencyGraph
    names: dict[nn.Module, str]
    input_node: Node | None  # the example input itself (None for integer inputs)
    output_nodes: set[Node]  # nodes whose result is a model output
    opaque_nodes: dict[Node, str]  # operations no channel may be removed through → why
    # nodes of the model's layers that hold parameters or buffers → qualified name: the slices a
    # channel group lists (TP's stand-ins for add/cat/view and the parameter-free shortcut hold
    # nothing to remove or to mask)
    layer_names: dict[Node, str]
    # operations run by an ignored layer whose per-channel state Torch-Pruning cannot prune → why
    # the channels that meet them are kept
    kept_nodes: dict[Node, str] = field(default_factory=dict)
    # layers left alone without being asked, and why (auxiliary heads that run only in training)
    notes: list[str] = field(default_factory=list)

    def describe(self, node: Node) -> str:
        """``'layer1.0.conv1' (Conv2d)`` for the model's layers, ``parameter 'block.scale' of shape
        (8, 1, 1)`` for a parameter used outside a layer Torch-Pruning knows, the autograd op
        otherwise."""
        if isinstance(node.module, nn.Module) and node.module in self.names:
            return f"{self.names[node.module]!r} ({type(node.module).__name__})"
        if node is self.input_node:
            return "the model input"
        if isinstance(node.module, nn.Parameter):
            names = {p: n for n, p in self.model.named_parameters()}
            return f"parameter {names.get(node.module)!r} of shape {tuple(node.module.shape)}"
        op = node.grad_fn.name() if hasattr(node.grad_fn, "name") else type(node.grad_fn).__name__
        return f"the {op} operation in forward"

    def module_name(self, node: Node) -> str | None:
        """The qualified name of the model's own module behind ``node`` (None for TP's ops)."""
        return self.names.get(node.module) if isinstance(node.module, nn.Module) else None

    def role(self, handler: Any) -> Role:
        """Producer when the handler prunes the output dimension (BatchNorm, depthwise conv and
        element-wise ops prune both and count as producers), consumer otherwise."""
        return "producer" if self.graph.is_out_channel_pruning_fn(handler) else "consumer"

    def boundary(self, node: Node, handler: Any) -> str | None:
        """Why pruning ``node`` with ``handler`` would change the model's interface (or a layer
        kept whole on request), if it would."""
        if node in self.output_nodes and self.graph.is_out_channel_pruning_fn(handler):
            return f"{self.describe(node)} produces a model output"
        if node is self.input_node:
            return "the channels are channels of the model input"
        return self.kept_nodes.get(node)

    def pruner(self, module: nn.Module):
        return self.graph.get_pruner_of_module(module)


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _owns_tensors(module: nn.Module) -> bool:
    return _owns_parameters(module) or any(True for _ in module.buffers(recurse=False))


def _holds_weights(module: object) -> bool:
    return isinstance(module, nn.Module) and _owns_tensors(module)


def _has_pruner(graph: tp.DependencyGraph, module: nn.Module) -> bool:
    """Whether Torch-Pruning prunes ``module``'s own tensors.

    The same test as Torch-Pruning's ``_detect_unwrapped_parameters``: a customized pruner for the
    module or its class, or a registered pruner for its type. ``get_pruner_of_module`` cannot tell:
    it answers the element-wise placeholder, which prunes nothing, for every unknown module.
    """
    if type(module) in graph.CUSTOMIZED_PRUNERS or module in graph.CUSTOMIZED_PRUNERS:
        return True
    op_type = tp.ops.module2type(module)
    registered = graph.REGISTERED_PRUNERS.get(op_type) is not None
    return registered and op_type != tp.ops.OPTYPE.ELEMENTWISE


def _channel_counts(graph: tp.DependencyGraph) -> set[int]:
    """The output widths of the layers Torch-Pruning can prune: the counts of prunable channels.
    Input widths are left out: every internal width is some layer's output width, and the one that
    is not (the model input's, 3 for RGB) is never pruned, so input normalisation holding one mean
    per colour passes."""
    counts: set[int] = set()
    for module in graph.module2node:
        if isinstance(module, nn.Module) and _has_pruner(graph, module):
            width = graph.get_pruner_of_module(module).get_out_channels(module)
            if width:
                counts.add(width)
    return counts


def _unpruned_state(
    module: nn.Module, graph: tp.DependencyGraph, channel_counts: set[int]
) -> dict[str, tuple[int, ...]]:
    """The per-channel tensors of ``module`` that pruning would leave at their old width.

    For a module without a pruner, Torch-Pruning prunes only the parameters autograd shows it
    (unwrapped parameters, which have nodes of their own); its buffers, and parameters the trace
    did not reach, stay as they are. A tensor none of whose sizes is a channel count cannot hold
    one value per channel (a 1x1xHxW map, BatchNorm's ``num_batches_tracked``) and is fine; nor
    can an integer tensor (an index table).
    """
    if _has_pruner(graph, module):
        return {}
    tensors = [*module.named_buffers(recurse=False)] + [
        (n, p) for n, p in module.named_parameters(recurse=False) if p not in graph.module2node
    ]
    # integer tensors are indices or counters (Swin's relative_position_index), not one value
    # per channel, whatever their length happens to equal
    return {
        name: tuple(t.shape)
        for name, t in tensors
        if t.is_floating_point() and any(size > 1 and size in channel_counts for size in t.shape)
    }


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


def _recording_forward(recording: _Recording, watched: list[nn.Module], reshapes: record_channel_reshapes):
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


def _input_leaf(example_input: torch.Tensor) -> torch.Tensor:
    """The leaf the model is traced from: a requires-grad copy, so that frozen models still get a
    full autograd graph; a float input becomes an nn.Parameter so that Torch-Pruning can give it
    a node whose channel count (dim 1) it knows."""
    x = example_input.detach().clone()
    if x.is_floating_point() and x.dim() >= 2:
        return nn.Parameter(x)
    return x.requires_grad_(True) if x.is_floating_point() else x


def _undo_vit_workaround(graph: tp.DependencyGraph, x: torch.Tensor) -> None:
    """Torch-Pruning switches off concat/split offsets downstream of any 3-D unwrapped parameter
    (a ViT special case); a 3-D input (Conv1d models) is not that case."""
    own_3d = [p for p, _ in graph.unwrapped_parameters if p is not x and p.dim() == 3]
    if x.dim() == 3 and not own_3d:
        for node in graph.module2node.values():
            node.enable_index_mapping = True


def _check_traced(
    name: str, module: nn.Module, graph: tp.DependencyGraph, recording: _Recording, ignore: set[str]
) -> None:
    """A layer with parameters must be in the graph (absent only if ignored)."""
    if not (_owns_parameters(module) or module in graph.module2node):
        return
    # A layer run several times (shared weights) is one node of the graph, tied to the producers
    # of all its inputs and the consumers of all its outputs: its channels prune exactly.
    calls = recording.calls[module]
    in_graph = module in graph.module2node or any(
        p in graph.module2node for p in module.parameters(recurse=False)
    )
    if in_graph:
        return
    if calls == 0 and name not in ignore:
        raise TraceError(
            f"module {name!r} ({type(module).__name__}) was not run by the forward pass on "
            "the example input (data-dependent control flow, or an unused layer), so its "
            "channels cannot be traced: make forward take the same path for every input, "
            f"or pass ignore=[{name!r}] if the layer is never used"
        )
    if calls > 0:
        raise TraceError(
            f"module {name!r} ({type(module).__name__}) runs in the forward pass but the "
            "tracer cannot follow it to a model output (its result is unused, detached, or "
            "its parameters do not require grad while it is not a standard layer): "
            "remove it from forward or make it a standard torch.nn layer"
        )


def _check_not_misread(name: str, module: nn.Module) -> None:
    """A grouped conv with one output per group but several inputs per group is one Torch-Pruning
    takes for a depthwise conv: it ties each input to one output, which is wrong, and the wrong
    ties reach other layers' channels through the graph. Only with the conv and the layers that
    produce its inputs ignored are its channels kept out of every group."""
    if isinstance(module, nn.modules.conv._ConvNd) and 1 < module.groups == module.out_channels != module.in_channels:
        raise TraceError(
            f"module {name!r} ({type(module).__name__}) has groups={module.groups} with one output "
            f"but {module.in_channels // module.groups} inputs per group: Torch-Pruning takes it for "
            "a depthwise convolution and would tie the wrong channels together; give it two or "
            "more outputs per group, or name it and the layers producing its inputs in "
            f"--prune-ignore (ignore=[{name!r}, ...] in Python) to keep their channels"
        )


def _unpruned_state_error(name: str, module: nn.Module, state: dict[str, tuple[int, ...]]) -> str:
    kind = type(module).__name__
    buffers = {n for n, _ in module.named_buffers(recurse=False)}
    held = ", ".join(
        f"{'buffer' if n in buffers else 'parameter'} {n!r} {shape}" for n, shape in state.items()
    )
    if {"running_mean", "running_var"} <= buffers and not _owns_parameters(module):
        dims = kind[-2:] if kind[-2:] in ("1d", "2d", "3d") else "2d"
        fix = (
            f"swap it for nn.BatchNorm{dims} in eval mode holding the same weight, bias and "
            "running statistics (it computes the same numbers)"
        )
    else:
        fix = "make it a standard torch.nn layer (or register a Torch-Pruning pruner for its type)"
    return (
        f"module {name!r} ({kind}) holds per-channel state that Torch-Pruning has no pruner for "
        f"({held}): pruning the channels it touches would leave these at their old width, so "
        f"the pruned model would fail or compute something else; {fix}, or pass "
        f"ignore=[{name!r}] if its channels are not pruned (every channel it touches is then kept)"
    )


def _check_coverage(
    model: nn.Module,
    graph: tp.DependencyGraph,
    recording: _Recording,
    ignore: set[str],
    channel_counts: set[int],
) -> None:
    """Every layer with parameters is in the graph exactly once, and no layer outside ``ignore``
    holds per-channel state that Torch-Pruning would leave unpruned."""
    for name, module in model.named_modules():
        _check_traced(name, module, graph, recording, ignore)
        if name in ignore:
            continue
        _check_not_misread(name, module)
        state = _unpruned_state(module, graph, channel_counts)
        if state:
            raise TraceError(_unpruned_state_error(name, module, state))


def _kept_nodes(
    model: nn.Module,
    graph: tp.DependencyGraph,
    recording: _Recording,
    ignore: set[str],
    channel_counts: set[int],
) -> dict[Node, str]:
    """The operations run by ignored layers holding state Torch-Pruning cannot prune → why the
    channels through them are kept.

    The whole call is kept (for a container, its children's layers too): the state may be used
    by any operation in it. A call none of whose operations is in the graph (its result does not
    depend on the input) cannot be kept that way, and is refused.
    """
    if not ignore:
        return {}
    by_number = {
        node.grad_fn._sequence_nr(): node
        for node in graph.module2node.values()
        if hasattr(node.grad_fn, "_sequence_nr")
    }
    kept: dict[Node, str] = {}
    for name, module in model.named_modules():
        if name not in ignore or not recording.windows.get(module):
            continue
        if not _unpruned_state(module, graph, channel_counts):
            continue
        why = (
            f"{name!r} ({type(module).__name__}) is named in ignore and holds per-channel state "
            "Torch-Pruning cannot prune"
        )
        inside = [
            node
            for start, end in recording.windows[module]
            for number, node in by_number.items()
            if start < number < end
        ]
        if not inside:
            raise TraceError(
                f"module {name!r} ({type(module).__name__}) is named in ignore, but no operation "
                "it runs depends on the model input, so the channels its state meets cannot be "
                "found and kept: compute its result from its input (x * self.scale, not a "
                "tensor made from its buffers alone) or make it a standard torch.nn layer"
            )
        kept.update((node, why) for node in inside)
    return kept


def _training_only(
    model: nn.Module, example_input: torch.Tensor, recording: _Recording, ignore: set[str]
) -> set[str]:
    """Layers with parameters that the eval-mode forward did not run but a train-mode forward (of a
    copy, on the same input) does: auxiliary classifiers such as GoogLeNet's and Inception-v3's.
    Layers skipped in both modes are left for :func:`_check_traced` to refuse."""
    skipped = {
        name for name, module in model.named_modules()
        if name and name not in ignore and _owns_parameters(module) and recording.calls[module] == 0
    }
    if not skipped:
        return set()
    copy_ = copy.deepcopy(model).train()
    ran: set[str] = set()
    modules = dict(copy_.named_modules())
    hooks = [modules[name].register_forward_hook(lambda *_, name=name: ran.add(name)) for name in skipped]
    try:
        with torch.no_grad():
            copy_(example_input)
    except Exception:  # a model that cannot run in train mode: nothing is learned from it
        return set()
    finally:
        for hook in hooks:
            hook.remove()
    # a head's layers and everything below them
    return {name for name in modules if any(name == r or name.startswith(r + ".") for r in ran)}


def trace_model(
    model: nn.Module,
    example_input: torch.Tensor,
    ignore: Iterable[str] = (),
    check_layers: bool = True,
) -> TracedModel:
    """Trace ``model`` on ``example_input``; the model's weights and modes are left as they were.

    With ``check_layers``, every layer with parameters must be traced once (layers named in
    ``ignore`` may be absent) and no layer outside ``ignore`` may hold per-channel state that
    Torch-Pruning cannot prune; surgery turns it off, having been given groups found with it on.
    Channels that meet an ignored layer of the second kind are never removed.
    """
    if not isinstance(example_input, torch.Tensor):
        raise TraceError(
            f"example_input is a {type(example_input).__name__}; pass one input tensor "
            "(a batch of the model's input, e.g. torch.randn(2, 3, 32, 32))"
        )
    names = {m: n for n, m in model.named_modules()}
    watched = [m for m in model.modules() if _owns_tensors(m)]
    recording = _Recording()
    try:
        x = _input_leaf(example_input)
        reshapes = record_channel_reshapes()
        graph = tp.DependencyGraph()
        attach(graph, reshapes)
        guard_reshape_mapping()
        with modes_kept(model), torch.enable_grad():
            graph.build_dependency(
                model,
                x,
                forward_fn=_recording_forward(recording, watched, reshapes),
                unwrapped_parameters=[(x, 1)] if isinstance(x, nn.Parameter) else None,
                customized_pruners={PadShortcut: PadShortcutPruner()},
                verbose=False,
            )
    except Exception as exc:
        raise TraceError(
            f"Torch-Pruning could not trace {type(model).__name__} "
            f"({type(exc).__name__}: {exc}); the model must be a plain feed-forward torch.nn "
            "network whose forward takes one tensor"
        ) from exc
    if recording.problem:
        raise TraceError(recording.problem)
    ignore = set(ignore)
    notes: list[str] = []
    channel_counts = _channel_counts(graph)
    if check_layers:
        training_only = _training_only(model, example_input, recording, ignore)
        if training_only:
            heads = sorted({name.split(".")[0] for name in training_only})
            notes.append(
                f"{', '.join(heads)} run only in training mode (auxiliary heads): left unpruned and "
                "untraced, the pruned model is exact in eval mode, where they do not run"
            )
            ignore |= training_only
        _check_coverage(model, graph, recording, ignore, channel_counts)
    shared = sorted(names[m] for m, calls in recording.calls.items() if calls > 1 and _owns_parameters(m))
    if shared:
        more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
        notes.append(
            f"{', '.join(map(repr, shared[:3]))}{more} run more than once per forward pass (shared "
            "weights): a channel of theirs is removed from every use at once"
        )
    kept_nodes = _kept_nodes(model, graph, recording, ignore, channel_counts)
    cuts = kept_cuts(graph)
    if cuts:
        kinds = sorted(set(cuts.values()))
        notes.append(f"channels through {len(cuts)} operation(s) where {'; '.join(kinds)} are kept")
    kept_nodes = {**cuts, **kept_nodes}
    _undo_vit_workaround(graph, x)
    install_shortcut_mappings(graph)
    install_split_mappings(graph)
    install_unflatten_mappings(graph)
    opaque_nodes = complete_concat_mappings(graph)
    output_nodes = {
        node for node in graph.module2node.values() if node.grad_fn in recording.output_grad_fns
    }
    layer_names = {
        node: names[module]
        for module, node in graph.module2node.items()
        if isinstance(module, nn.Module) and module in names and _holds_weights(module)
    }
    return TracedModel(
        model,
        graph,
        names,
        graph.module2node.get(x),
        output_nodes,
        opaque_nodes,
        layer_names,
        kept_nodes,
        notes,
    )
