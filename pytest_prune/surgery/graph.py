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
  output, so that channels tied to either are never removed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import Node

from ..errors import TraceError
from ..models.cifar_resnet import PadShortcut
from .concat_mapping import complete_concat_mappings
from .shortcut_pruner import PadShortcutPruner, install_shortcut_mappings

Role = Literal["producer", "consumer"]


@dataclass
class _Recording:
    """What our forward function saw: call counts, outputs and the first problem."""

    calls: Counter = field(default_factory=Counter)
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

    def describe(self, node: Node) -> str:
        """``'layer1.0.conv1' (Conv2d)`` for the model's layers, the autograd op otherwise."""
        if isinstance(node.module, nn.Module) and node.module in self.names:
            return f"{self.names[node.module]!r} ({type(node.module).__name__})"
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
        """Why pruning ``node`` with ``handler`` would change the model's interface, if it would."""
        if node in self.output_nodes and self.graph.is_out_channel_pruning_fn(handler):
            return f"{self.describe(node)} produces a model output"
        if node is self.input_node:
            return "the channels are channels of the model input"
        return None

    def pruner(self, module: nn.Module):
        return self.graph.get_pruner_of_module(module)


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _holds_weights(module: object) -> bool:
    if not isinstance(module, nn.Module):
        return False
    return _owns_parameters(module) or any(True for _ in module.buffers(recurse=False))


def _module_modes(model: nn.Module) -> dict[nn.Module, bool]:
    return {m: m.training for m in model.modules()}


def _restore_modes(modes: dict[nn.Module, bool]) -> None:
    for module, training in modes.items():
        module.training = training


def _output_leaves(out: Any) -> Iterable[Any]:
    if isinstance(out, (list, tuple)):
        for item in out:
            yield from _output_leaves(item)
    elif isinstance(out, dict):
        for item in out.values():
            yield from _output_leaves(item)
    else:
        yield out


def _recording_forward(recording: _Recording, watched: list[nn.Module]):
    """A forward_fn for Torch-Pruning that records, checks, and never raises."""

    def count_call(module, inputs, output):
        recording.calls[module] += 1

    def forward(model: nn.Module, x: torch.Tensor):
        hooks = [m.register_forward_hook(count_call) for m in watched]
        try:
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


def _check_coverage(
    model: nn.Module, graph: tp.DependencyGraph, recording: _Recording, ignore: set[str]
) -> None:
    """Every layer with parameters must be in the graph exactly once."""
    for name, module in model.named_modules():
        if not (_owns_parameters(module) or module in graph.module2node):
            continue
        calls = recording.calls[module]
        if calls > 1:
            raise TraceError(
                f"module {name!r} ({type(module).__name__}) runs {calls} times in one forward "
                "pass; pytest-prune cannot prune a layer shared between several places: give "
                "each use its own module"
            )
        in_graph = module in graph.module2node or any(
            p in graph.module2node for p in module.parameters(recurse=False)
        )
        if in_graph:
            continue
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


def trace_model(
    model: nn.Module,
    example_input: torch.Tensor,
    ignore: Iterable[str] = (),
    check_layers: bool = True,
) -> TracedModel:
    """Trace ``model`` on ``example_input``; the model's weights and modes are left as they were.

    With ``check_layers``, every layer with parameters must be traced once (layers named in
    ``ignore`` may be absent); surgery turns it off, having been given groups found with it on.
    """
    if not isinstance(example_input, torch.Tensor):
        raise TraceError(
            f"example_input is a {type(example_input).__name__}; pass one input tensor "
            "(a batch of the model's input, e.g. torch.randn(2, 3, 32, 32))"
        )
    names = {m: n for n, m in model.named_modules()}
    watched = [m for m in model.modules() if _owns_parameters(m)]
    recording = _Recording()
    modes = _module_modes(model)
    try:
        x = _input_leaf(example_input)
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                model,
                x,
                forward_fn=_recording_forward(recording, watched),
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
    finally:
        _restore_modes(modes)
    if recording.problem:
        raise TraceError(recording.problem)
    if check_layers:
        _check_coverage(model, graph, recording, set(ignore))
    _undo_vit_workaround(graph, x)
    install_shortcut_mappings(graph)
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
        model, graph, names, graph.module2node.get(x), output_nodes, opaque_nodes, layer_names
    )
