"""``attribution`` and ``attribution-corr``: attribution pruning, scored with captum.

Zhang, Yang, Sang, Yu, *Convolution network pruning based on the evaluation of the importance of
characteristic attributions*, Scientia Sinica Informationis 51(1):13–26, 2021 ("attribution
pruning"). The only criterion module that imports captum (lazily: it takes seconds to import).
"""

from __future__ import annotations

import dataclasses

from math import prod
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from ..errors import SpecError
from ._activations import (
    FeaturePoint,
    captured_outputs,
    channel_maps,
    eval_mode,
    example_of,
    feature_points,
    point_keys,
)
from .base import Criterion, ScoringContext, Scores
from .registry import register

Mode = Literal["layer", "correlation"]
Target = Literal["predicted", "label"]


def _targets(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target) -> torch.Tensor:
    if target == "label":
        return y
    with torch.no_grad():
        return model(x).argmax(dim=1)


def _pearson_per_channel(maps: torch.Tensor, attribution: torch.Tensor) -> torch.Tensor:
    """``(N, G)`` Pearson correlation over pixels of each map ``(N, G, P)`` with ``(N, P)``;
    0 where either is constant."""
    m = maps - maps.mean(dim=2, keepdim=True)
    a = (attribution - attribution.mean(dim=1, keepdim=True)).unsqueeze(1)
    cov = (m * a).sum(dim=2)
    denom = torch.sqrt((m * m).sum(dim=2) * (a * a).sum(dim=2))
    return torch.where(denom > 0, cov / torch.where(denom > 0, denom, 1.0), torch.zeros_like(cov))


def layer_attribution_scores(ctx: ScoringContext, target: Target = "predicted") -> Scores:
    """score_c = mean_x Σ_{h,w} |(∂y_t/∂a · a)_c|, summed over the channel's feature points.

    captum's ``LayerGradientXActivation`` computes it where every feature point is a module's only
    call. It hooks a module, so it cannot single out one call of a module run several times (a
    block's shared ReLU, one block on two inputs): there :func:`gradient_x_activation` computes the
    same product from each call's captured output.
    """
    model = ctx.model
    example = example_of(ctx.batches, "attribution")
    points = feature_points(model, ctx.groups, example)
    keys = point_keys(points)
    reused = any(p.reused for pts in points.values() for p in pts)
    totals = {g.name: torch.zeros(g.size, dtype=torch.float64, device=example.device) for g in ctx.groups}
    samples = 0
    with eval_mode(model):
        explain = (lambda x, t: gradient_x_activation(model, x, t, keys)) if reused else _captum_explainer(model, keys)
        for x, y in ctx.batches:
            by_key = explain(x, _targets(model, x, y, target))
            for g in ctx.groups:
                for point in points[g.name]:
                    per = channel_maps(by_key[point.key].detach(), point.positions)
                    totals[g.name] += per.double().abs().sum(dim=2).sum(dim=0)
            samples += x.shape[0]
    return {name: total / max(samples, 1) for name, total in totals.items()}


def _captum_explainer(model: torch.nn.Module, keys: list[tuple[str, int]]):
    """``(x, targets) → {key: gradient × activation}`` with captum, for modules called once."""
    from captum.attr import LayerGradientXActivation  # captum takes seconds to import: only when used

    layers = [model.get_submodule(name) for name, _ in keys]
    explainer = LayerGradientXActivation(model, layers if len(layers) > 1 else layers[0])

    def explain(x: torch.Tensor, t: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        attrs = explainer.attribute(x, target=t)
        return dict(zip(keys, attrs if isinstance(attrs, list) else [attrs]))

    return explain


def gradient_x_activation(
    model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, keys: list[tuple[str, int]]
) -> dict[tuple[str, int], torch.Tensor]:
    """Gradient of each sample's target logit × the output, at each (module, call) of ``keys``."""
    with torch.enable_grad(), captured_outputs(model, keys) as maps:
        # the input needs a gradient only so that a model with frozen weights still has a graph
        logits = model(x.detach().requires_grad_(True))
        chosen = logits.gather(1, targets.reshape(-1, 1).to(logits.device)).sum()
        grads = torch.autograd.grad(chosen, [maps[k] for k in keys])
        return {k: maps[k].detach() * g for k, g in zip(keys, grads)}


def correlation_scores(
    ctx: ScoringContext, target: Target = "predicted", ig_steps: int = 16, rectify: bool = True
) -> Scores:
    """score_c = mean_x corr(F_c(x)↑, Σ_colour |IG(x)|), Pearson over pixels (see :class:`Attribution`).

    A correlation over pixels needs a spatial map: groups of linear units (a classifier's hidden
    layers) are scored by the layer mode instead, which ranks them within their own group just as
    well (allocation is per group for this criterion).
    """
    model = ctx.model
    example = example_of(ctx.batches, "attribution-corr")
    points = feature_points(model, ctx.groups, example)
    keys = point_keys(points)
    totals = {g.name: torch.zeros(g.size, dtype=torch.float64, device=example.device) for g in ctx.groups}
    flat: set[str] = set()  # groups whose maps are not spatial
    samples = 0
    from captum.attr import IntegratedGradients  # captum takes seconds to import: only when used

    with eval_mode(model):
        ig = IntegratedGradients(model)
        for x, y in ctx.batches:
            t = _targets(model, x, y, target)
            attribution = ig.attribute(
                x, baselines=0.0, target=t, n_steps=ig_steps, internal_batch_size=x.shape[0]
            )
            a_map = attribution.detach().abs().sum(dim=1).flatten(1).double()  # (N, H·W)
            size = tuple(x.shape[2:])
            with torch.no_grad(), captured_outputs(model, keys) as maps:
                model(x)
            for g in ctx.groups:
                if any(maps[p.key].dim() != 2 + len(size) for p in points[g.name]):
                    flat.add(g.name)
                    continue
                corr = torch.zeros(x.shape[0], g.size, dtype=torch.float64, device=x.device)
                for point in points[g.name]:
                    corr += _point_correlation(maps[point.key], point, size, a_map, rectify)
                totals[g.name] += (corr / len(points[g.name])).sum(dim=0)
            samples += x.shape[0]
    scores = {name: total / max(samples, 1) for name, total in totals.items() if name not in flat}
    if flat:
        flat_ctx = dataclasses.replace(ctx, groups=[g for g in ctx.groups if g.name in flat])
        scores.update(layer_attribution_scores(flat_ctx, target))
    return scores


def _point_correlation(
    output: torch.Tensor, point: FeaturePoint, size: tuple[int, ...], a_map: torch.Tensor, rectify: bool
) -> torch.Tensor:
    if output.dim() != 2 + len(size):
        raise SpecError(
            f"attribution-corr needs spatial feature maps; {point.module} gives shape "
            f"{tuple(output.shape)}: score such groups with the 'attribution' (layer) mode"
        )
    if rectify and not point.activated:
        output = output.clamp(min=0)  # the activation is functional (F.relu): apply it here
    n, g, spatial = output.shape[0], len(point.positions), output.shape[2:]
    # a channel held at several output positions is the mean of their maps
    maps = channel_maps(output, point.positions).reshape(n, g, -1, prod(spatial)).mean(dim=2)
    maps = maps.reshape(n, g, *spatial).float()
    if len(size) == 2:
        up = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    else:
        up = F.interpolate(maps, size=size, mode="nearest")
    return _pearson_per_channel(up.reshape(n, g, -1).double(), a_map)


@register
class Attribution(Criterion):
    """Attribution pruning: keep the channels most tied to the attribution of the decision.

    Two modes (``mode=`` or the registered name):

    * ``layer`` (default, ``attribution``): score_c = mean over calibration images x of
      Σ_{h,w} |attr_c(x)|, attr = captum ``LayerGradientXActivation`` of the target logit at the
      channel's feature map (gradient × activation per position);
    * ``correlation`` (``attribution-corr``): score_c = mean over x of corr(F_c(x)↑, A(x)),
      A(x) = Σ over colour channels of |IntegratedGradients(x)| (captum, zero baseline,
      ``ig_steps=16``), F_c(x)↑ the channel's post-activation map bilinearly resized to the input's
      size, corr = Pearson over pixels, 0 for a constant map. Scores lie in [-1, 1]: a channel
      anti-correlated with the attribution scores below an inactive one.

    The target logit is the model's predicted class (``target="label"``: the label). A residual
    stream's chains are summed (``layer``) or their correlations averaged (``correlation``).
    Where the network applies its activation functionally (``F.relu``), ``correlation`` rectifies
    the BatchNorm output itself (``rectify=True``: right for ReLU networks); ``layer`` needs no such
    step (gradient × activation is the same before and after a ReLU).

    Default: ``layer``. It costs one forward + backward per batch for all groups at once, where
    ``correlation`` costs ``ig_steps`` of them plus a forward; it stays inside the network (no
    resizing); and its scores are ≥ 0 with exactly 0 for a dead channel, so they rank like the
    other criteria. Swap the default once the benchmark has compared both.

    What is whose: scoring filters by how their learned features relate to the causal features
    (the attribution map) of the decision, and pruning the least related, is Zhang et al.'s;
    both concrete scores (captum layer attribution; Pearson correlation with the integrated-
    gradients map) and the choice of target are **our reading**.

    Allocation: ``layerwise`` is natural for both modes. Raw attribution magnitudes differ
    between layers; ``correlation`` scores are unit-free, but a network's linear groups are scored
    by the ``layer`` mode (no spatial map to correlate), so one global ranking would compare
    correlations with gradient × activation sums; and the paper (Zhang et al., by its abstract)
    says nothing of ranking across layers. ``--prune-allocation global`` still works.
    """

    name = "attribution"
    needs_data = True
    summary = "captum attribution of the decision at each channel (Zhang et al. 2021)"
    cost = "one forward+backward per calibration batch (correlation: ig_steps+1)"
    natural_allocation: ClassVar[str] = "layerwise"
    mode: Mode = "layer"
    target: Target = "predicted"
    ig_steps: int = 16
    rectify: bool = True

    def __init__(self, mode: Mode | None = None, target: Target | None = None, ig_steps: int | None = None):
        self.mode = mode or type(self).mode
        self.target = target or type(self).target
        self.ig_steps = ig_steps or type(self).ig_steps
        if self.target not in ("predicted", "label"):
            raise SpecError(f"attribution target {self.target!r} is unknown: use 'predicted' or 'label'")
        if self.mode not in ("layer", "correlation"):
            raise SpecError(f"attribution mode {self.mode!r} is unknown: use 'layer' (criterion 'attribution') or 'correlation' ('attribution-corr')")

    def scores(self, ctx: ScoringContext) -> Scores:
        if self.mode == "layer":
            return layer_attribution_scores(ctx, self.target)
        return correlation_scores(ctx, self.target, self.ig_steps, self.rectify)


@register
class AttributionCorrelation(Attribution):
    """``attribution`` in ``correlation`` mode: Pearson correlation with the integrated gradients map."""

    name = "attribution-corr"
    summary = "correlation of each channel's map with the integrated-gradients map (Zhang et al. 2021)"
    cost = "ig_steps+1 forward(+backward) passes per calibration batch"
    mode = "correlation"
