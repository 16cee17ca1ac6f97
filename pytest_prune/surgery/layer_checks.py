"""Which layers a trace may prune, and why not: every layer with parameters is in the graph (or
ignored), a conv Torch-Pruning would misread is refused, and a layer holding per-channel state that
Torch-Pruning has no pruner for is refused, or its channels kept where it is ignored. Layers that
run only in training mode (auxiliary heads) are found here too."""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import Node

from ..errors import TraceError
from .recording import Recording


def owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def owns_tensors(module: nn.Module) -> bool:
    return owns_parameters(module) or any(True for _ in module.buffers(recurse=False))


def holds_weights(module: object) -> bool:
    return isinstance(module, nn.Module) and owns_tensors(module)


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


def channel_counts(graph: tp.DependencyGraph) -> set[int]:
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


def _check_traced(
    name: str, module: nn.Module, graph: tp.DependencyGraph, recording: Recording, ignore: set[str]
) -> None:
    """A layer with parameters must be in the graph (absent only if ignored)."""
    if not (owns_parameters(module) or module in graph.module2node):
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
    if {"running_mean", "running_var"} <= buffers and not owns_parameters(module):
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


def check_coverage(
    model: nn.Module,
    graph: tp.DependencyGraph,
    recording: Recording,
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


def kept_nodes(
    model: nn.Module,
    graph: tp.DependencyGraph,
    recording: Recording,
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


def training_only(
    model: nn.Module, example_input: torch.Tensor, recording: Recording, ignore: set[str]
) -> set[str]:
    """Layers with parameters that the eval-mode forward did not run but a train-mode forward (of a
    copy, on the same input) does: auxiliary classifiers such as GoogLeNet's and Inception-v3's.
    Layers skipped in both modes are left for :func:`_check_traced` to refuse."""
    skipped = {
        name for name, module in model.named_modules()
        if name and name not in ignore and owns_parameters(module) and recording.calls[module] == 0
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
