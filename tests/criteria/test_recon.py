"""``recon``: known answers (a channel the others reproduce exactly goes first, whatever its norm;
the greedy's errors are those of explicit refits), determinism, and the lsq refit it plans for."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.criteria.recon import VARIANCE_FLOOR, Reconstruction
from pytest_prune.data.bundle import DataBundle
from pytest_prune.plan import PrunePlan
from pytest_prune.recovery import RecoveryPipeline
from pytest_prune.recovery.lsq import LeastSquaresReconstruction
from pytest_prune.surgery import find_channel_groups, prune_model


class Concatenated(nn.Module):
    """Two 1×1 convs of an 8-channel input (rank 8: their 5 outputs are independent unless planted)
    whose outputs one 3×3 conv reads, concatenated: b's channel 0 is planted as
    2·a₀ + 3·a₁, an exact linear combination of group a's channels (which stay when group b is
    pruned), with the largest L1 norm of group b; b's channels 1 and 2 are independent and small."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Conv2d(8, 2, 1, bias=False)
        self.b = nn.Conv2d(8, 3, 1, bias=False)
        self.head = nn.Conv2d(5, 3, 3, padding=1)
        with torch.no_grad():
            self.a.weight.copy_(torch.randn(self.a.weight.shape, generator=g))
            self.b.weight[1:] = 0.5 * torch.randn(self.b.weight[1:].shape, generator=g)
            self.b.weight[0] = 2 * self.a.weight[0] + 3 * self.a.weight[1]
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g))

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def _images(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 8, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def planted():
    model = Concatenated().eval()
    x = _images()
    groups = find_channel_groups(model, x[:1])
    ctx = ScoringContext(model, groups, [(x, torch.zeros(len(x), dtype=torch.long))])
    return model, groups, ctx


def test_recon_removes_the_exact_combination_that_l1_keeps(planted):
    _, _, ctx = planted
    recon, l1 = get_criterion("recon").scores(ctx)["b"], get_criterion("l1").scores(ctx)["b"]
    assert l1[0] > l1[1:].max()  # the planted channel has the largest norm: l1 removes another
    assert 0 not in get_criterion("l1").plan(ctx, 0.34).remove["b"]
    assert get_criterion("recon").plan(ctx, 0.34).remove["b"] == (0,)
    # without the ridge its removal costs the refit nothing; the next removal costs output
    exact = Reconstruction(ridge=0.0).scores(ctx)["b"]
    assert exact[0] ** 2 < 1e-9 < 1e-3 < exact[1:].min() ** 2, exact.tolist()
    # the ridge (λ ∝ 1e-4) charges for the larger weights on a₀, a₁ that absorb it: still cheapest
    assert recon[0] ** 2 < 0.5 * (recon[1:].min() ** 2 - recon[0] ** 2), recon.tolist()


def test_after_the_refit_the_planted_removal_costs_nothing_and_l1s_costs_output(planted):
    model, groups, ctx = planted
    x = ctx.batches[0][0]
    labelled = TensorDataset(x, torch.zeros(len(x), dtype=torch.long))
    bundle = DataBundle("planted", labelled, labelled, labelled, num_classes=3, input_shape=(8, 8, 8))
    errors = {}
    for name in ("recon", "l1"):
        plan = PrunePlan({"a": (), "b": get_criterion(name).plan(ctx, 0.34).remove["b"]})
        pruned = prune_model(model, groups, plan, x[:1])
        step = LeastSquaresReconstruction(ridge=0.0)
        refit = RecoveryPipeline((step,)).recover(model, pruned, bundle, seed=0, groups=groups, plan=plan).model
        test = _images(32, 3)
        with torch.no_grad():
            errors[name] = float((refit(test) - model(test)).norm() / model(test).norm())
    assert errors["recon"] < 1e-4, errors
    assert errors["l1"] > 1e-2, errors


class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.hidden = nn.Linear(5, 6)
        self.out = nn.Linear(6, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def _refit_error(h: torch.Tensor, y: torch.Tensor, kept: list[int], ridge: float) -> float:
    """The documented objective, from scratch: rows [h_S, 1], λ = ridge · tr(HᵀH)/D over all D
    inputs, outputs weighted by 1 / (rows · (var + floor · mean var) · outputs)."""
    var = y.var(dim=0, unbiased=False)
    w = 1.0 / (len(y) * (var + VARIANCE_FLOOR * var.mean()) * y.shape[1])
    lam = ridge * float((h * h).sum()) / h.shape[1]
    a = torch.cat([h[:, kept], torch.ones(len(h), 1, dtype=h.dtype)], 1)
    penalty = torch.diag(torch.tensor([lam] * len(kept) + [0.0], dtype=h.dtype))
    theta = torch.linalg.solve(a.T @ a + penalty, a.T @ y)
    residual = ((a @ theta - y) ** 2 * w).sum() + (theta[:-1] ** 2).sum(0) @ w * lam
    return float(residual)


def test_the_greedy_error_is_the_error_of_explicit_refits_at_every_step():
    model = TwoLinear().eval()
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(4))
    groups = [g for g in find_channel_groups(model, x[:1]) if g.name == "hidden"]
    crit = Reconstruction()
    scores = crit.scores(ScoringContext(model, groups, [(x, torch.zeros(len(x), dtype=torch.long))]))["hidden"]
    with torch.no_grad():
        h = torch.relu(model.hidden(x)).double()
        y = model.out(torch.relu(model.hidden(x))).double()
    full = _refit_error(h, y, list(range(6)), crit.ridge)
    order = torch.argsort(scores).tolist()
    kept = list(range(6))
    for step, channel in enumerate(order[:-1]):
        # brute force: the channel whose removal leaves the least refit error is the greedy's
        errors = {c: _refit_error(h, y, [k for k in kept if k != c], crit.ridge) for c in kept}
        assert channel == min(errors, key=errors.get), (step, errors)
        kept.remove(channel)
        assert scores[channel] ** 2 == pytest.approx(errors[channel] - full, rel=1e-6, abs=1e-12)
    # the first two removals against every pair: here the greedy's pair is the best pair
    pairs = {p: _refit_error(h, y, [k for k in range(6) if k not in p], crit.ridge)
             for p in itertools.combinations(range(6), 2)}
    assert set(order[:2]) == set(min(pairs, key=pairs.get))


def test_scores_ignore_the_seed_and_repeat(planted):
    model, groups, ctx = planted
    other = ScoringContext(model, groups, ctx.batches, seed=99)
    a, b = get_criterion("recon").scores(ctx), get_criterion("recon").scores(other)
    assert all(torch.equal(a[k], b[k]) for k in a)


class ScaledAway(nn.Module):
    """Channel c of ``a`` reaches only output c of ``head``; the BatchNorm after ``head`` scales
    output 1 down to γ = 1e-3. Channel 1 has the larger weights; the channels are uncorrelated."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 2, 1, bias=False)
        self.head = nn.Conv2d(2, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        with torch.no_grad():
            self.a.weight.zero_()
            self.a.weight[0, 0] = 1.0  # channel c copies input channel c: uncorrelated channels
            self.a.weight[1, 1] = 10.0
            self.head.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self.bn.weight.copy_(torch.tensor([1.0, 1e-3]))

    def forward(self, x):
        return self.bn(self.head(self.a(x)))


def test_an_output_the_next_batchnorm_scales_away_costs_nothing():
    """The error counts as the BatchNorm after the consumer passes it on ((γ/σ)² per output): an
    error weighted by the outputs' own variances (the fallback without a BatchNorm) would score
    both channels alike and remove channel 0 (the tie goes to the lower index)."""
    model = ScaledAway().eval()
    x = _images()
    groups = [g for g in find_channel_groups(model, x[:1]) if g.name == "a"]
    ctx = ScoringContext(model, groups, [(x, torch.zeros(len(x), dtype=torch.long))])
    assert get_criterion("l1").plan(ctx, 0.5).remove["a"] == (0,)
    assert get_criterion("recon").plan(ctx, 0.5).remove["a"] == (1,)
