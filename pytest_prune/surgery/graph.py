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

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import Node

from ..errors import TraceError
from ..layers import PadShortcut
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
from .layer_checks import (
    channel_counts,
    check_coverage,
    holds_weights,
    kept_nodes,
    owns_parameters,
    owns_tensors,
    training_only,
)
from .recording import Recording, recording_forward
from .shortcut_pruner import PadShortcutPruner, install_shortcut_mappings

Role = Literal["producer", "consumer"]


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
    watched = [m for m in model.modules() if owns_tensors(m)]
    recording = Recording()
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
                forward_fn=recording_forward(recording, watched, reshapes),
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
    counts = channel_counts(graph)
    if check_layers:
        heads_only = training_only(model, example_input, recording, ignore)
        if heads_only:
            heads = sorted({name.split(".")[0] for name in heads_only})
            notes.append(
                f"{', '.join(heads)} run only in training mode (auxiliary heads): left unpruned and "
                "untraced, the pruned model is exact in eval mode, where they do not run"
            )
            ignore |= heads_only
        check_coverage(model, graph, recording, ignore, counts)
    shared = sorted(names[m] for m, calls in recording.calls.items() if calls > 1 and owns_parameters(m))
    if shared:
        more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
        notes.append(
            f"{', '.join(map(repr, shared[:3]))}{more} run more than once per forward pass (shared "
            "weights): a channel of theirs is removed from every use at once"
        )
    kept = kept_nodes(model, graph, recording, ignore, counts)
    cuts = kept_cuts(graph)
    if cuts:
        kinds = sorted(set(cuts.values()))
        notes.append(f"channels through {len(cuts)} operation(s) where {'; '.join(kinds)} are kept")
    kept = {**cuts, **kept}
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
        if isinstance(module, nn.Module) and module in names and holds_weights(module)
    }
    return TracedModel(
        model,
        graph,
        names,
        graph.module2node.get(x),
        output_nodes,
        opaque_nodes,
        layer_names,
        kept,
        notes,
    )
