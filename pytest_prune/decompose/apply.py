"""Decompose every conv of a model that gains from it, and report what was done to each.

A conv is *eligible* when it is an ``nn.Conv2d`` with ``groups == 1``, a kernel larger than 1x1,
called by the forward pass on the example input, not named in ``skip``, and high-dimensional when
a ``threshold`` or ``min_channels`` is given. An eligible conv is decomposed only when the Tucker-2
cascade at the chosen ranks has fewer parameters *and* fewer MACs than the conv; MACs are counted
by :mod:`pytest_prune.measure.macs` on the layer's real input size, recorded by a forward hook.

"High-dimensional" is the split of Gong et al. (2020): low-dimensional convs are pruned,
high-dimensional ones decomposed. See :func:`is_high_dimensional`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial
from typing import Iterable, Literal

import torch
from torch import nn

from ..measure.macs import count_model
from ..modes import eval_mode
from .errors import DecompositionError
from .ranks import rank_rule
from .tucker import Tucker2Ranks, decompose_conv, tucker2_cascade

# Weights of a conv from which it counts as high-dimensional. 2048 = 2^11 sits between the convs
# that see the image (LeNet-5 conv1: 1·6·5·5 = 150; a CIFAR ResNet stem: 3·16·3·3 = 432) and the
# inner convs that hold the bulk of the weights (LeNet-5 conv2: 6·16·5·5 = 2400; CIFAR ResNet:
# 16·16·3·3 = 2304 and up; every VGG-16 conv of Faster R-CNN but the first: ≥ 36 864).
HIGH_DIMENSIONAL_WEIGHTS = 2048

Decision = Literal["decomposed", "kept", "skipped"]


def is_high_dimensional(
    conv: nn.Conv2d, threshold: int = HIGH_DIMENSIONAL_WEIGHTS, min_channels: int = 1
) -> bool:
    """Weights C_out · C_in/groups · k_h · k_w ≥ ``threshold`` and min(C_in, C_out) ≥ ``min_channels``.

    Both must hold: a conv that sees 3 colour channels has little to gain from a rank on its input
    mode however large its kernel. The defaults apply the weight threshold alone.
    """
    return conv.weight.numel() >= threshold and min(conv.in_channels, conv.out_channels) >= min_channels


@dataclass(frozen=True)
class LayerDecomposition:
    """What happened to one conv. ``*_after`` describe the layer as it is in the returned model."""

    name: str
    shape: tuple[int, ...]  # the original kernel: (C_out, C_in / groups, k_h, k_w)
    ranks: Tucker2Ranks | None  # the ranks chosen (also for a kept conv); None when skipped early
    params_before: int
    params_after: int
    macs_before: int  # per sample, on the input seen by the forward pass
    macs_after: int
    decision: Decision
    reason: str


def _total(attribute: str) -> property:
    return property(lambda report: sum(getattr(layer, attribute) for layer in report.layers), doc=f"Σ {attribute}")


@dataclass
class DecompositionReport:
    """Per-layer decisions of :func:`decompose_model`, with the rule and value that chose the ranks."""

    rule: str
    value: float | None
    layers: list[LayerDecomposition] = field(default_factory=list)

    def by_decision(self, decision: Decision) -> list[LayerDecomposition]:
        return [layer for layer in self.layers if layer.decision == decision]

    @property
    def decomposed(self) -> list[str]:
        return [layer.name for layer in self.by_decision("decomposed")]

    params_before = _total("params_before")
    params_after = _total("params_after")
    macs_before = _total("macs_before")
    macs_after = _total("macs_after")

    def summary(self) -> str:
        value = f" ({self.value})" if self.value is not None else ""
        lines = [f"Tucker-2 decomposition, ranks by {self.rule}{value}"]
        for layer in self.layers:
            ranks = f"ranks {tuple(layer.ranks)}" if layer.ranks is not None else "no ranks"
            lines.append(
                f"  {layer.name} {layer.shape}: {layer.decision} ({ranks}; params {layer.params_before} → "
                f"{layer.params_after}; MACs {layer.macs_before} → {layer.macs_after}) — {layer.reason}"
            )
        return "\n".join(lines)


def _input_shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, list[tuple[int, ...]]]:
    """Per conv name, the shape of one sample of its input, once per call of the forward pass."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):

            def hook(_module, inputs, name=name):
                shapes.setdefault(name, []).append(tuple(inputs[0].shape[1:]))

            hooks.append(module.register_forward_pre_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(example_input)
    finally:
        for handle in hooks:
            handle.remove()
    return shapes


def _cost(module: nn.Module, shapes: list[tuple[int, ...]], device: torch.device | str) -> tuple[int, int]:
    """(parameters, MACs per sample summed over the calls) of ``module`` on inputs of ``shapes``."""
    macs = sum(count_model(module, torch.empty((1, *shape), device=device)).macs for shape in shapes)
    return sum(p.numel() for p in module.parameters()), macs


def _skip_reason(
    conv: nn.Module, name: str, skip: set[str], shapes: list, threshold: int | None, min_channels: int
) -> str | None:
    if name in skip:
        return "named in skip"
    if not isinstance(conv, nn.Conv2d):
        return f"{type(conv).__name__}: only nn.Conv2d is decomposed"
    if conv.groups != 1:
        kind = "depthwise" if conv.groups == conv.in_channels else "grouped"
        return f"{kind} conv (groups={conv.groups}): Tucker-2 on the channel modes needs groups == 1"
    if tuple(conv.kernel_size) == (1, 1):
        return "1x1 conv: it is a matrix already; a Tucker-2 cascade would only add a layer"
    if not shapes:
        return "not called by the forward pass on example_input, so its cost is unknown"
    filtered = threshold is not None or min_channels > 1
    if filtered and not is_high_dimensional(conv, threshold or 0, min_channels):
        return (
            f"low-dimensional: {conv.weight.numel()} weights (threshold {threshold or 0}), "
            f"min(C_in, C_out) = {min(conv.in_channels, conv.out_channels)} "
            f"(min_channels {min_channels})"
        )
    return None


def decompose_model(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ranks: str = "fraction",
    value: float | None = None,
    threshold: int | None = None,
    min_channels: int = 1,
    skip: Iterable[str] = (),
) -> tuple[nn.Module, DecompositionReport]:
    """A deep copy of ``model`` with every conv that gains from it replaced by its Tucker-2 cascade.

    ``ranks`` names the rank rule (``'fraction'``, ``'energy'``, ``'vbmf'``; see
    :data:`~.ranks.RANK_RULES`) and ``value`` its argument (default 0.5 for ``fraction``, 0.9 for
    ``energy``; ``vbmf`` takes none). With ``threshold`` and/or ``min_channels``, only the convs
    :func:`is_high_dimensional` accepts are candidates. ``skip`` names convs to leave alone.
    ``model`` itself is not changed (not even its training mode).
    """
    choose_ranks, used_value = rank_rule(ranks, value)
    skip = set(skip)
    new_model = copy.deepcopy(model)
    convs = {name: m for name, m in new_model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}
    unknown = sorted(skip - set(convs))
    if unknown:
        raise DecompositionError(
            f"skip names {', '.join(map(repr, unknown))}, which are not convs of the model; "
            f"conv names: {', '.join(convs) or '(none)'}"
        )
    shapes = _input_shapes(new_model, example_input)
    report = DecompositionReport(ranks, used_value)
    for name, conv in convs.items():
        calls = shapes.get(name, [])
        params, macs = _cost(conv, calls, conv.weight.device)
        layer = partial(LayerDecomposition, name, tuple(conv.weight.shape))
        reason = _skip_reason(conv, name, skip, calls, threshold, min_channels)
        if reason is not None:
            report.layers.append(layer(None, params, params, macs, macs, "skipped", reason))
            continue
        chosen = choose_ranks(conv)
        new_params, new_macs = _cost(tucker2_cascade(conv, chosen), calls, "meta")
        grows = [
            f"{what} {before} → {after}"
            for what, before, after in (("parameters", params, new_params), ("MACs", macs, new_macs))
            if after >= before
        ]
        if grows:
            reason = f"decomposition would not reduce {' and '.join(grows)}"
            report.layers.append(layer(chosen, params, params, macs, macs, "kept", reason))
            continue
        cascade = decompose_conv(conv, chosen)
        if name:
            new_model.set_submodule(name, cascade)
        else:  # the model is this one conv
            new_model = cascade
        reason = f"parameters ×{new_params / params:.2f}, MACs ×{new_macs / macs:.2f}"
        report.layers.append(layer(chosen, params, new_params, macs, new_macs, "decomposed", reason))
    return new_model, report
