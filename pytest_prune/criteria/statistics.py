"""``meanvar``: statistics pruning by the mean and variance of filter weights, clustered per layer.

Gong, Zhang, Zeng, *Convolution neural network model compression method based on pruning and tensor
decomposition*, Journal of Computer Applications 40(11):3146–3151, 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..groups import ChannelGroup, is_conv_or_linear, member_weight_slices
from ..plan import PrunePlan
from .base import Criterion, ScoringContext, Scores
from .registry import register


@dataclass(frozen=True)
class LayerClusters:
    """One group's 2-means result: which channels are weak, and every channel's score."""

    weak: tuple[int, ...]  # positions in the weak cluster (smaller-variance centroid)
    scores: torch.Tensor  # signed distance from the weak centroid toward the strong one
    points: torch.Tensor  # (channels, 2): standardised (mean, variance) of each filter


def filter_statistics(model: torch.nn.Module, group: ChannelGroup, use_abs: bool = False) -> torch.Tensor:
    """``(channels, 2)``: mean and (population) variance of each channel's filter weights.

    A channel's filter is the union of its weight slices in every conv/linear producer of the group
    (one conv for a plain layer, all the stream's convs for a residual stream). Biases and BatchNorm
    entries are not filter weights and are left out.
    """
    per_channel: list[list[torch.Tensor]] = [[] for _ in range(group.size)]
    for member in group.producers():
        if not is_conv_or_linear(model.get_submodule(member.module)):
            continue
        for c, parts in enumerate(member_weight_slices(model, member)):
            per_channel[c].append(parts[0].reshape(-1))
    stats = torch.zeros(group.size, 2, dtype=torch.float64)
    for c, parts in enumerate(per_channel):
        if not parts:
            continue
        w = torch.cat(parts).double()
        if use_abs:
            w = w.abs()
        stats[c, 0] = w.mean()
        stats[c, 1] = w.var(unbiased=False)
    return stats


def _standardise(points: torch.Tensor) -> torch.Tensor:
    centred = points - points.mean(dim=0)
    std = points.std(dim=0, unbiased=False)
    return torch.where(std > 0, centred / torch.where(std > 0, std, 1.0), torch.zeros_like(centred))


def two_means(z: torch.Tensor, seed: int, n_init: int = 10, max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's 2-means with k-means++ starts drawn from ``seed``; the best of ``n_init`` runs.

    Returns (labels, centres). Deterministic: the same points and seed give the same result.
    Written out here (a few lines in torch) because scikit-learn's ``KMeans`` takes seconds to
    import and about half a second per layer, for a 2-D problem with a few hundred points.
    """
    gen = torch.Generator().manual_seed(seed)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for _ in range(n_init):
        first = int(torch.randint(z.shape[0], (1,), generator=gen))
        d2 = ((z - z[first]) ** 2).sum(dim=1)
        second = int(torch.multinomial(d2, 1, generator=gen)) if float(d2.sum()) > 0 else first
        centres = torch.stack([z[first], z[second]])
        for _ in range(max_iter):
            labels = torch.cdist(z, centres).argmin(dim=1)
            new = torch.stack([z[labels == k].mean(dim=0) if bool((labels == k).any()) else centres[k] for k in (0, 1)])
            if torch.equal(new, centres):
                break
            centres = new
        labels = torch.cdist(z, centres).argmin(dim=1)
        inertia = float(((z - centres[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, centres)
    assert best is not None
    return best[1], best[2]


def cluster_layer(points: torch.Tensor, seed: int, n_init: int = 10) -> LayerClusters:
    """2-means on the standardised (mean, variance) points of one layer (see :class:`MeanVariance`)."""
    z = _standardise(points)
    n = z.shape[0]
    if n < 2 or torch.unique(z, dim=0).shape[0] < 2:
        # nothing to separate: no weak cluster, all channels equal
        return LayerClusters((), torch.zeros(n, dtype=torch.float64), z)
    labels, centres = two_means(z, seed, n_init)
    # weak = smaller variance; on a tie, the centroid nearer zero mean
    weak_label = min((0, 1), key=lambda k: (float(centres[k, 1]), abs(float(centres[k, 0]))))
    weak_c, strong_c = centres[weak_label], centres[1 - weak_label]
    axis = strong_c - weak_c
    length = torch.linalg.vector_norm(axis)
    scores = (z - weak_c) @ (axis / length) if length > 0 else z[:, 1].clone()
    weak = tuple(int(i) for i in torch.nonzero(labels == weak_label).flatten())
    return LayerClusters(weak, scores, z)


@register
class MeanVariance(Criterion):
    """Per filter (μ, σ²) of its weights, standardised per layer, split by 2-means; weak = low σ².

    For every group: each channel's filter (its weights in every conv/linear producer) gives the
    point (μ, σ²) (``use_abs=True``: of |w|); the points are standardised per layer (zero mean,
    unit variance per coordinate); 2-means (:func:`two_means`: Lloyd's algorithm, best of
    ``n_init=10`` k-means++ starts drawn from ``ctx.seed``: deterministic) splits them, and the **weak** cluster is the one
    whose centroid has the smaller variance.

    * With a ratio (:meth:`scores`, :meth:`plan`): score_c = (z_c − c_weak)·u, the signed distance
      of the channel's standardised point from the weak centroid along the unit vector u toward the
      strong centroid: higher = farther from weak; channels beyond the weak centroid score < 0.
    * Without a ratio (:meth:`natural_plan`, the paper's mode): every layer loses its whole weak
      cluster (at least one channel is kept: the highest-scoring one).

    What is whose: mean and variance as the measure of a filter's contribution, clustering each
    conv layer's (mean, variance) distribution to separate the filters that extract weak features,
    and pruning those are Gong et al.'s (on LeNet-5). k = 2, the standardisation, "weak = smaller
    variance centroid", the signed-distance score for ratio runs, raw weights by default, and
    taking a residual stream's filter as the union of its convs' slices are **our reading**.

    Allocation: the natural mode is per layer (:meth:`natural_plan`); with a ratio, ``layerwise``
    is natural (scores are standardised per layer); ``global`` also runs, comparing standardised
    distances across layers.
    """

    name = "meanvar"
    summary = "filter weight mean/variance, 2-means per layer (Gong et al. 2020)"
    cost = "one read of the weights and a 2-means per layer; no data"
    natural_allocation: ClassVar[str] = "layerwise"
    use_abs: bool = False
    n_init: int = 10

    def __init__(self, use_abs: bool | None = None):
        if use_abs is not None:
            self.use_abs = use_abs

    def scores(self, ctx: ScoringContext) -> Scores:
        return {g.name: self.clusters_of(ctx, g).scores for g in ctx.groups}

    def natural_plan(self, ctx: ScoringContext) -> PrunePlan:
        """The paper's mode: every group loses its weak cluster, keeping at least one channel."""
        remove = {}
        for g in ctx.groups:
            c = self.clusters_of(ctx, g)
            weak = list(c.weak)
            if len(weak) >= g.size:
                weak.remove(int(torch.argmax(c.scores)))
            remove[g.name] = tuple(sorted(weak))
        return PrunePlan(remove)

    def clusters_of(self, ctx: ScoringContext, group: ChannelGroup) -> LayerClusters:
        return cluster_layer(filter_statistics(ctx.model, group, self.use_abs), ctx.seed, self.n_init)
