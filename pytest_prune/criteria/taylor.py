"""``taylor`` and ``taylor-plain``: activation-based first-order Taylor importance, iterative.

Zhang, Yang, Sang, Yu, *Convolution network pruning based on the evaluation of the importance of
characteristic attributions*, Scientia Sinica Informationis 51(1):13–26, 2021 ("Taylor-guided
pruning"), built on Molchanov, Tyree, Karras, Aila, Kautz, *Pruning Convolutional Neural Networks
for Resource Efficient Inference*, ICLR 2017.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from ..errors import SpecError
from ..masking import channels_masked
from ..plan import Allocation, PrunePlan
from ._activations import captured_outputs, channel_maps, eval_mode, example_of, feature_points, point_keys
from ._iterative import iterative_plan
from .base import Criterion, ScoringContext, Scores, one_shot_scores
from .registry import register

Variant = Literal["positive", "plain"]


def taylor_scores(ctx: ScoringContext, variant: Variant = "positive") -> Scores:
    """Θ per channel of every group, L2-normalised per group (see :class:`TaylorGuided`).

    Whatever ``ctx.model`` currently computes is scored: wrap the call in
    :func:`~pytest_prune.masking.channels_masked` to score with some channels removed (they score 0).
    """
    if variant not in ("positive", "plain"):
        raise SpecError(f"taylor variant {variant!r} is unknown: use 'positive' (criterion 'taylor') or 'plain' ('taylor-plain')")
    model = ctx.model
    example = example_of(ctx.batches, "taylor")
    points = feature_points(model, ctx.groups, example)
    keys = point_keys(points)
    # summed where the feature maps are: on the batches' device
    totals = {g.name: torch.zeros(g.size, dtype=torch.float64, device=example.device) for g in ctx.groups}
    samples = 0
    with eval_mode(model), captured_outputs(model, keys) as maps:
        for x, y in ctx.batches:
            # the input needs a gradient only so that a model with frozen weights still has a graph
            out = model(x.detach().requires_grad_(True))
            loss = ctx.loss_fn(out, y)
            grads = dict(zip(keys, torch.autograd.grad(loss, [maps[k] for k in keys])))
            n = x.shape[0]
            for g in ctx.groups:
                per_sample = torch.zeros(n, g.size, dtype=torch.float64, device=x.device)
                for point in points[g.name]:
                    a = channel_maps(maps[point.key].detach(), point.positions).double()
                    # ∂(mean loss)/∂a carries a factor 1/n: undo it to get each sample's own gradient
                    da = channel_maps(grads[point.key], point.positions).double() * n
                    prod = a * da  # (n, channels, positions)
                    if variant == "positive":
                        per_sample += prod.clamp(min=0).mean(dim=2)
                    else:
                        per_sample += prod.mean(dim=2)  # summed over points, |·| below
                if variant == "plain":
                    per_sample = per_sample.abs()
                totals[g.name] += per_sample.sum(dim=0)
            samples += n
    out_scores: Scores = {}
    for name, total in totals.items():
        theta = total / max(samples, 1)
        norm = torch.linalg.vector_norm(theta)
        out_scores[name] = theta / norm if norm > 0 else theta
    return out_scores


@register
class TaylorGuided(Criterion):
    """Θ⁺_k = mean_x (1/M) Σ_m max(0, a_m·∂L/∂a_m), normalised per layer, pruned iteratively.

    For channel k with feature map a (its M = H·W values for one calibration image x) and the
    calibration loss L (``ctx.loss_fn``, the model in eval mode):

    * ``variant="positive"`` (default, registered as ``taylor``): Θ⁺_k = mean over images of
      (1/M) Σ_m max(0, a_m·∂L/∂a_m), keeping only the terms where activation and gradient agree;
    * ``variant="plain"`` (registered as ``taylor-plain``): Θ_k = mean over images of
      | (1/M) Σ_m a_m·∂L/∂a_m |, Molchanov et al.'s criterion;

    then Θ̂_k = Θ_k / sqrt(Σ_j Θ_j²) over the channels j of the same group. ∂L/∂a is taken per
    image (the batch-mean loss's gradient times the batch size). A residual-stream group has one
    feature map per chain (stem, every block's last BatchNorm); their per-image terms are summed
    (for ``plain`` before the absolute value: the first-order change of L when the channel is
    zeroed everywhere at once).

    **Iterative** (:meth:`plan`): the target is removed in ``steps`` rounds (default 4); before each
    round the removed channels are masked (zeroed at every producer) and Θ is estimated again, so
    later choices see the network without the earlier ones. No fine-tuning between rounds.

    What is whose: the iterative prune-and-re-estimate framework and "positively correlated features
    of the channel and the gradient" are Zhang et al.'s; Θ, the per-layer L2 normalisation and the
    feature-map form are Molchanov et al.'s; reading "positive correlation" as the clamp
    max(0, a·∂L/∂a) per position, the per-image averaging, the 4-round schedule and summing over a
    residual stream's chains are **our reading**. This is not Torch-Pruning's ``TaylorImportance``
    (|w·∂L/∂w| on weights).

    Allocation: ``global`` is natural. The per-layer L2 normalisation is there to make Θ̂
    comparable across layers (it changes no ranking within a layer), and Molchanov et al. rank
    globally with it; Zhang et al.'s abstract says nothing against that. The plugin uses ``global``
    unless ``--prune-allocation`` says otherwise; ``layerwise`` works too. :meth:`plan` called
    directly keeps the caller's allocation (``layerwise`` by default).
    """

    name = "taylor"
    needs_data = True
    summary = "activation×gradient Taylor, positive terms, iterative (Zhang et al. 2021; Molchanov et al. 2017)"
    cost = "one forward+backward per calibration batch per round (steps rounds)"
    natural_allocation: ClassVar[str] = "global"
    plans_from_scores: ClassVar[bool] = False  # iterative: re-scores between rounds
    variant: Variant = "positive"
    steps: int = 4

    def __init__(self, variant: Variant | None = None, steps: int | None = None):
        self.variant = variant or type(self).variant
        self.steps = steps if steps is not None else type(self).steps

    def scores(self, ctx: ScoringContext) -> Scores:
        """One-shot estimate on the unpruned model."""
        return taylor_scores(ctx, self.variant)

    def plan(self, ctx: ScoringContext, ratio: float, allocation: Allocation = "layerwise") -> PrunePlan:
        def rescore(removed: PrunePlan) -> Scores:
            if removed.count() == 0:  # the first round scores the unpruned model: the one-shot scores
                return one_shot_scores(self, ctx)
            with channels_masked(ctx.model, ctx.groups, removed):
                return taylor_scores(ctx, self.variant)

        return iterative_plan(ctx.groups, ratio, allocation, rescore, self.steps)


@register
class TaylorPlain(TaylorGuided):
    """Molchanov et al.'s Θ_k = |(1/M) Σ_m a_m·∂L/∂a_m| (``taylor`` with ``variant="plain"``)."""

    name = "taylor-plain"
    summary = "activation×gradient Taylor, |mean|, iterative (Molchanov et al. 2017)"
    variant = "plain"
