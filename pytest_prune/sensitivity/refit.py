"""``lsq`` inside the sensitivity analysis: refit one group's consumers on the masked model.

The recovery step (:mod:`pytest_prune.recovery.lsq`) refits a *pruned* model's narrowed layers;
here the model is masked, not cut, so each consumer keeps its full width and its removed input
columns are simply left out of the fit (their weights are set to zero, which on a zeroed input is
the same network). The fit is the step's: rows are the layer's input patches at 16 sampled output
positions per image, targets the dense layer's outputs there, θ = argmin ‖Aθ − Y‖² + λ‖W‖² with
λ = ridge · tr(XᵀX)/D over the kept columns and an unpenalised bias (He et al. 2017, section 3.1;
Luo et al. 2017, section 3.3). The dense targets are kept once, in the analysis's dense pass, for
every consumer of every group, and shared by all groups and fractions.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from ..groups import ChannelGroup
from ..recovery.lsq import LeastSquaresReconstruction
from ..recovery.lsq_capture import NormalEquations, SampledLayer, capture_dense, in_width, input_positions

_STEP = LeastSquaresReconstruction()  # the step's defaults: positions per image and ridge


def refittable(model: nn.Module, group: ChannelGroup) -> list[str]:
    """The group's consumers that a least-squares fit can refit: ungrouped Conv2d and Linear
    layers that do not also produce the group (a depthwise conv's outputs are masked anyway)."""
    producers = {m.module for m in group.producers()}
    out = []
    for member in group.consumers():
        module = model.get_submodule(member.module)
        if member.module in producers or LeastSquaresReconstruction.unsupported(module) is not None:
            continue
        if member.module not in out:
            out.append(member.module)
    return out


class DenseTargets:
    """Every refittable consumer's dense outputs at its sampled positions, from one dense pass
    (the ``lsq`` step's capture, :func:`~pytest_prune.recovery.lsq_capture.capture_dense`)."""

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup], x: torch.Tensor, seed: int):
        names = sorted({name for g in groups for name in refittable(model, g)})
        layers = [SampledLayer(name, model.get_submodule(name)) for name in names]
        capture_dense(model, layers, [x], _STEP.positions, torch.Generator().manual_seed(seed))
        # a layer called several times per pass shares its weights between places: no one fit
        self.layers = {s.name: s for s in layers if s.calls == 1 and s.captured == 1}


class ConsumerRefit:
    """Pre-forward hooks that refit ``group``'s consumers, with ``removed`` zeroed, before each runs."""

    def __init__(self, model: nn.Module, group: ChannelGroup, removed: tuple[int, ...], targets: DenseTargets):
        self.model = model
        self.targets = targets
        gone: dict[str, set[int]] = {}
        for member in group.consumers():
            gone.setdefault(member.module, set()).update(i for p in removed for i in member.indices[p])
        self.kept_inputs = {
            name: [c for c in range(in_width(model.get_submodule(name))) if c not in gone[name]]
            for name in refittable(model, group) if name in targets.layers
        }

    @contextmanager
    def installed(self) -> Iterator[None]:
        saved, handles, done = {}, [], set()
        for name in self.kept_inputs:
            module = self.model.get_submodule(name)
            saved[name] = [p.detach().clone() for p in (module.weight, module.bias) if p is not None]

            def refit(module, args, name=name):
                if name not in done:  # the first call only: the capture kept that one
                    done.add(name)
                    self.fit(name, module, args[0])

            handles.append(module.register_forward_pre_hook(refit))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            with torch.no_grad():
                for name, old in saved.items():
                    module = self.model.get_submodule(name)
                    for param, value in zip((module.weight, module.bias), old):
                        param.copy_(value)

    def fit(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        """Write the least-squares weights of ``layer`` over its kept input columns.

        The normal equations are built over every column and then cut to the kept ones: the
        Gram matrix of a subset of columns is the sub-matrix of the Gram matrix of all of them."""
        sampled = self.targets.layers[name]
        if input_positions(layer, x) != sampled.available:
            return  # the masked layer does not line up with the dense one: left as it is
        full = NormalEquations()
        full.add_layer(layer, x, sampled.positions, torch.cat(sampled.targets))
        taps = layer.weight[0, 0].numel()  # kernel taps per input channel (1 for linear)
        columns = [c * taps + k for c in self.kept_inputs[name] for k in range(taps)]
        has_bias = layer.bias is not None
        index = torch.as_tensor(columns + ([full.gram.shape[0] - 1] if has_bias else []))
        kept = NormalEquations(full.gram[index][:, index], full.cross[index])
        penalty = kept.ridge(_STEP.ridge, has_bias)
        if penalty is None:
            return  # the input is zero at every sampled position: nothing to fit
        theta = torch.linalg.solve(kept.gram + torch.diag(penalty), kept.cross)
        width = len(columns)
        weight = torch.zeros(layer.weight.shape[0], layer.weight[0].numel(), dtype=torch.float64)
        weight[:, columns] = theta[:width].T
        with torch.no_grad():
            layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))
            if has_bias:
                layer.bias.copy_(theta[width].to(layer.bias.dtype))
