"""Residual-aware targets for ``lsq``: the last layer of a branch also absorbs the other branch's error.

In a residual block ``relu(bn2(conv2(h)) + shortcut(x))`` the plain refit asks ``conv2`` for its dense
output, but what the network needs is the dense *sum*: when the shortcut carries an error of its own
(its stream was pruned, or earlier blocks were refit imperfectly), conv2 fit to its own dense
output passes that error on untouched, and it compounds block after block. He, Zhang, Sun,
"Channel Pruning for Accelerating Very Deep Neural Networks", ICCV 2017, section 4.3, fit the
branch's last layer to ``Y₁ + Y₂ − Y₂'`` instead: its dense output plus the difference between the
dense and the pruned shortcut. Here, with a per-channel affine map ``a·z + b`` (an eval-mode
BatchNorm, or none) between the layer and the add, the target of output channel c is

    y_c = y_dense,c + (s_dense,c − s_pruned,c) / a_c,

where ``s`` is the add's other operand at the same sampled positions, in the dense network and in
the pruned network as refit so far. When the shortcut is exact the correction is zero and the fit
is the plain one. On ``cifar-resnet56`` at macs:0.45 (``recon`` global) this raised top-1 after
``lsq`` from 87.88 % to 89.06 %, +1.18 ± 0.60 points paired (``python benchmarks/lsq_residual.py``, table in
docs/results.md).

Where: a refit layer whose output reaches one operand of a binary add (``+``, ``+=``, ``torch.add``
without ``alpha``; both operands of one shape) through single-user modules that are, in eval mode,
at most one BatchNorm and identities (dropout), found on a ``torch.fx`` trace that keeps every
module without children whole. The pruned pass then runs the traced graph node by node: such a
layer runs with its old weights, and when the add is reached — both operands known, whatever order
the forward computes them in — it is refit to the corrected target, recomputed, and the add uses the
new value. A model fx cannot trace keeps the plain targets, with the reason in the step's report.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import fx, nn

from ..groups import batchnorm_scale
from .lsq_capture import channels_first, gather_positions

ADDS = {operator.add, operator.iadd, torch.add}
# identities in eval mode, which the pruned and dense passes run in (a transformer's MLP ends in one)
PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)


class WholeLeafTracer(fx.Tracer):
    """Traces through containers only: a module without children (a user's shortcut module, a
    layer) is one ``call_module`` node, so the graph names the modules the refit hooks."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return next(m.children(), None) is None or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> tuple[fx.GraphModule | None, str | None]:
    """``model`` traced (sharing its modules), or None and why fx could not."""
    try:
        graph = WholeLeafTracer().trace(model)
    except Exception as error:  # fx raises many types on dynamic control flow; the reason is what matters
        return None, f"torch.fx cannot trace the model ({type(error).__name__}: {str(error).splitlines()[0][:160]})"
    return fx.GraphModule(model, graph), None


@dataclass
class Tail:
    """A refit layer whose output (through ``affine``, when set) is one operand of a binary add."""

    layer: str
    affine: str | None  # the eval-mode BatchNorm between the layer and the add
    add: str  # the add's node name
    operand: int  # which argument of the add the tail gives
    dense_other: list[torch.Tensor] = field(default_factory=list)  # the other operand, sampled, per batch

    @property
    def where(self) -> tuple:
        """What must agree between the dense trace's tail and the pruned one's."""
        return self.add, self.operand, self.affine


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_binary_add(node: fx.Node) -> bool:
    if node.kwargs or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
        return False
    if node.op == "call_function":
        return node.target in ADDS
    return node.op == "call_method" and node.target in ("add", "add_")


def find_tails(gm: fx.GraphModule, layers: set[str]) -> dict[str, Tail]:
    """Layer name → :class:`Tail`, for each of ``layers`` called once and ending a branch of an add."""
    modules = dict(gm.named_modules())
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in layers:
            calls.setdefault(node.target, []).append(node)
    tails = {}
    for name, nodes in calls.items():
        if len(nodes) != 1:
            continue  # a layer run twice is not refit at all (lsq skips it)
        end, affine = nodes[0], None
        user = _only_user(end)
        while user is not None and user.op == "call_module":  # eval-mode pass-throughs and one BatchNorm
            module = modules[user.target]
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and affine is None:
                affine = user.target
            elif not isinstance(module, PASS_THROUGH):
                break
            end, user = user, _only_user(user)
        if user is not None and _is_binary_add(user) and user.args[0] is not user.args[1]:
            tails[name] = Tail(name, affine, user.name, user.args.index(end))
    return tails


def affine_scale(module: nn.Module | None, width: int, like: torch.Tensor) -> torch.Tensor:
    """The per-channel factor ``a`` of the eval-mode BatchNorm (ones without one), in float64."""
    if module is None:
        return torch.ones(width, dtype=torch.float64, device=like.device)
    return batchnorm_scale(module)


class DenseAddCapture(fx.Interpreter):
    """Runs the traced dense model; at each tail's add keeps the *other* operand at the tail layer's
    sampled positions (which the capture hooks draw when the layer runs, before its add)."""

    def __init__(self, gm: fx.GraphModule, tails: dict[str, Tail], fits: dict, offset: Callable[[], int]):
        super().__init__(gm)
        self.by_add = by_add(tails)
        self.fits, self.offset = fits, offset

    def run_node(self, n: fx.Node):
        tails = self.by_add.get(n.name, ())
        args = self.fetch_args_kwargs_from_env(n)[0] if tails else ()
        for tail in tails:
            fit = self.fits[tail.layer]
            if fit.positions is not None and args[0].shape == args[1].shape:  # not a broadcast add
                other = channels_first(fit.dense, args[1 - tail.operand])
                positions = fit.positions[self.offset() : self.offset() + len(other)]
                sampled = gather_positions(other, positions)
                if fit.kept_outputs is not None:
                    sampled = sampled[:, fit.kept_outputs]
                tail.dense_other.append(sampled.double())
        return super().run_node(n)


class PrunedTailRefit(fx.Interpreter):
    """Runs the traced pruned model; at a tail's add refits the tail layer with the corrected target
    (``refit(fit, input, correction)``), recomputes it (and its BatchNorm) and adds the new value."""

    def __init__(self, gm: fx.GraphModule, tails: dict[str, Tail], fits: dict, inputs: dict, refit: Callable):
        super().__init__(gm)
        self.by_add = by_add(tails)
        self.modules = dict(gm.named_modules())
        self.fits, self.inputs, self.refit = fits, inputs, refit

    def run_node(self, n: fx.Node):
        tails = [t for t in self.by_add.get(n.name, ()) if t.layer in self.inputs]
        if not tails:
            return super().run_node(n)
        operands, _ = self.fetch_args_kwargs_from_env(n)
        operands = list(operands)
        for tail in tails:  # with two tails (a conv shortcut), the second absorbs the first's new error
            operands[tail.operand] = self.refit_tail(tail, operands[tail.operand], operands[1 - tail.operand])
        return operands[0] + operands[1]  # a new tensor also for +=: the old operand is stale

    def refit_tail(self, tail: Tail, value: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """The tail's value after its refit to the corrected target (``value`` if it was not refit)."""
        fit, x = self.fits[tail.layer], self.inputs.pop(tail.layer)
        layer = self.modules[tail.layer]
        affine = self.modules[tail.affine] if tail.affine else None
        correction = None
        if other.shape == value.shape and tail.dense_other:  # else: a broadcast add, the plain target
            sampled = gather_positions(channels_first(layer, other), fit.positions).double()
            dense = torch.cat(tail.dense_other)
            if dense.shape == sampled.shape:
                correction = (dense - sampled) / affine_scale(affine, sampled.shape[1], sampled)
        tail.dense_other.clear()
        if not self.refit(fit, x, correction):
            return value
        value = layer(x)
        return affine(value) if affine is not None else value


def by_add(tails: dict[str, Tail]) -> dict[str, list[Tail]]:
    """Add node name → the tails that feed it, in forward order of their layers."""
    grouped: dict[str, list[Tail]] = {}
    for tail in tails.values():
        grouped.setdefault(tail.add, []).append(tail)
    return grouped
