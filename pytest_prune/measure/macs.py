"""The one MACs and parameter counter used everywhere (gates, reports, budgets, benchmarks).

What it counts, per sample (batch size divided out):

* convolutions (any ``nn.Conv*d``, grouped and depthwise included): one multiply-accumulate per
  output element per input channel of its group per kernel tap:
  ``out.numel() / N * (C_in / groups) * prod(kernel)``; the bias add is not counted;
* linear layers: ``out.numel() / N * in_features``;
* nothing else: BatchNorm, activations, pooling, additions and the option-A shortcut are memory-bound
  element-wise work (BatchNorm folds into the conv at deployment) and count zero. Functional calls
  that bypass modules (``F.conv2d`` inside a ``forward``) are not seen.

Parameters are counted per module (its own parameters, not its children's); the total is
``sum(p.numel() for p in model.parameters())``. BatchNorm running statistics are buffers and are
not parameters.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from math import prod

import torch
from torch import nn

from ..modes import eval_mode


@dataclass(frozen=True)
class LayerCount:
    name: str
    kind: str
    macs: int
    params: int


@dataclass
class ModelCount:
    macs: int
    params: int
    layers: list[LayerCount] = field(default_factory=list)

    def by_layer(self) -> dict[str, LayerCount]:
        return {layer.name: layer for layer in self.layers}


def _macs_of(module: nn.Module, output: torch.Tensor, batch: int) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = (module.in_channels // module.groups) * prod(module.kernel_size)
        return output.numel() // batch * per_output
    if isinstance(module, nn.Linear):
        return output.numel() // batch * module.in_features
    return 0


@torch.no_grad()
def count_model(model: nn.Module, example_input: torch.Tensor) -> ModelCount:
    """MACs per sample and parameters of ``model`` on inputs shaped like ``example_input``."""
    batch = example_input.shape[0]
    macs: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):

            def hook(mod, _inputs, output, name=name):
                macs[name] = macs.get(name, 0) + _macs_of(mod, output, batch)

            hooks.append(module.register_forward_hook(hook))
    try:
        with eval_mode(model):
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    if not hooks:
        # No conv or linear modules to hook: a torch.export program, whose graph calls aten ops
        # directly. Count the same multiply-accumulates from the ops (FLOPs / 2).
        total = _macs_from_ops(model, example_input)
        return ModelCount(total, sum(p.numel() for p in model.parameters()), [])
    layers = []
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if name in macs or own:
            layers.append(LayerCount(name, type(module).__name__, macs.get(name, 0), own))
    total_params = sum(p.numel() for p in model.parameters())
    return ModelCount(sum(macs.values()), total_params, layers)


def _macs_from_ops(model: nn.Module, example_input: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(example_input)
    # FlopCounterMode counts 2 FLOPs per multiply-accumulate of convolutions and matmuls
    return counter.get_total_flops() // 2 // example_input.shape[0]


def serialised_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the storage a shipped checkpoint takes."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def storage_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict tensors (parameters and buffers) as stored."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
