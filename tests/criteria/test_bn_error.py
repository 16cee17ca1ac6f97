"""Known answers of ``bn-error``: planted channels, its error model where the model's assumptions
hold exactly, the coherent mean shift, residual streams and networks without BatchNorm."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from planted_net import DEAD, FREE, ORIGINAL, SIZE, TWIN, TinyNet, tiny_groups
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.criteria._activations import trace_calls
from pytest_prune.criteria.bn_error import channel_moments, error_gram, greedy_scores, rectified_moments
from pytest_prune.groups import ChannelGroup, GroupMember
from pytest_prune.models import build_model
from pytest_prune.models.cifar_resnet import CifarResNet
from pytest_prune.surgery import find_channel_groups


def _scores(ctx: ScoringContext, group: str = "conv1") -> torch.Tensor:
    return get_criterion("bn-error").scores(ctx)[group]


def test_dead_channel_scores_zero_and_ranks_lowest(tiny):
    scores = _scores(tiny.context())
    assert scores[DEAD] == 0.0
    assert scores[DEAD] < scores[FREE].min()


def test_zero_batchnorm_scale_and_shift_rank_lowest_though_the_filter_is_intact(tiny):
    """l1 and cpmc read the intact filter and keep it; a zero γ and β make the channel's output
    exactly 0 after ReLU, and bn-error sees that without data."""
    victim = 3
    with torch.no_grad():
        tiny.model.bn1.weight[victim] = 0.0
        tiny.model.bn1.bias[victim] = 0.0
    others = [c for c in FREE if c != victim]
    scores = _scores(tiny.context())
    assert float(scores[victim]) < 1e-300  # no error: only the one-ulp tie-break above 0
    assert scores[victim] < scores[others].min()
    assert get_criterion("l1").scores(tiny.context())["conv1"][victim] > 0


def test_unused_twin_is_free_and_its_original_is_not(tiny):
    scores = _scores(tiny.context())
    assert float(scores[TWIN]) < 1e-300
    assert scores[TWIN] < scores[ORIGINAL]


def test_large_filter_whose_consumers_are_all_zero_ranks_lowest():
    torch.manual_seed(5)
    model = TinyNet(width1=8, width2=16).eval()
    big = 4
    with torch.no_grad():
        model.conv1.weight[big] *= 3.0
        model.conv2.weight[:, big] = 0.0
    ctx = ScoringContext(model, tiny_groups(model), [(torch.randn(2, 3, SIZE, SIZE), torch.zeros(2, dtype=torch.long))])
    assert int(torch.argmax(get_criterion("l1").scores(ctx)["conv1"])) == big
    assert int(torch.argmin(_scores(ctx))) == big
    assert big in get_criterion("bn-error").plan(ctx, 0.2, "layerwise").remove["conv1"]


@pytest.mark.parametrize("mu, sd", [(0.7, 1.3), (-1.5, 0.8), (0.0, 2.0), (2.0, 0.1)])
def test_rectified_moments_match_numerical_integration(mu, sd):
    z = torch.linspace(mu - 12 * sd, mu + 12 * sd, 400_001, dtype=torch.float64)
    density = torch.exp(-0.5 * ((z - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    r = z.clamp(min=0)
    mean = torch.trapezoid(r * density, z)
    var = torch.trapezoid(r * r * density, z) - mean**2
    got = rectified_moments(torch.tensor([mu], dtype=torch.float64), torch.tensor([sd], dtype=torch.float64))
    assert float(got.mean) == pytest.approx(float(mean), rel=1e-6)
    assert float(got.var) == pytest.approx(float(var), rel=1e-6)


def test_rectified_moments_of_a_constant_are_relu_and_zero():
    got = rectified_moments(torch.tensor([1.5, -0.5], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    assert got.mean.tolist() == [1.5, 0.0] and got.var.tolist() == [0.0, 0.0]


class _GaussianBlock(nn.Module):
    """Input noise → 1×1 conv (diagonal) → BN → ReLU → 3×3 conv (no padding) → BN: every
    assumption of the error model holds exactly (Gaussian, independent channels and positions)."""

    def __init__(self, channels: int = 5, outputs: int = 4):
        super().__init__()
        gen = torch.Generator().manual_seed(11)
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, outputs, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        with torch.no_grad():
            scale = 0.5 + torch.rand(channels, generator=gen)
            self.conv1.weight.copy_(torch.diag(scale)[:, :, None, None])
            self.bn1.running_var.copy_(scale**2 - self.bn1.eps)  # BN output exactly γ·x + β
            self.bn1.weight.copy_(0.3 + torch.rand(channels, generator=gen))
            self.bn1.bias.copy_(torch.randn(channels, generator=gen))
            self.conv2.weight.copy_(torch.randn(outputs, channels, 3, 3, generator=gen) * 0.5)
            self.bn2.running_var.copy_(0.5 + torch.rand(outputs, generator=gen))
            self.bn2.weight.copy_(torch.randn(outputs, generator=gen))
        self.eval()

    def forward(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def group(self) -> ChannelGroup:
        ids = tuple((i,) for i in range(self.conv1.out_channels))
        return ChannelGroup("conv1", "conv1", tuple(range(len(ids))), (
            GroupMember("conv1", "producer", ids), GroupMember("bn1", "producer", ids),
            GroupMember("conv2", "consumer", ids)))


@pytest.mark.parametrize("removed", [(0,), (1, 3), (0, 2, 4)])
def test_error_gram_predicts_the_measured_error_when_its_assumptions_hold(removed):
    """1ᵀ G_RR 1 is the mean over positions of Σ_o (change of bn2's output)² when R is removed."""
    model = _GaussianBlock()
    x = torch.randn(64, 5, 34, 34, generator=torch.Generator().manual_seed(12))
    gram = error_gram(model, model.group(), trace_calls(model, x[:1]))
    with torch.no_grad():
        full = model(x)
        model.conv2.weight[:, list(removed)] = 0.0
        measured = float(((full - model(x)) ** 2).sum(dim=1).mean())
    predicted = float(gram[list(removed)][:, list(removed)].sum())
    assert measured == pytest.approx(predicted, rel=0.03)


def test_greedy_takes_the_partner_whose_mean_shift_cancels():
    """a is cheapest alone; b alone costs more than c, but b's shift cancels a's: with a gone, b
    is nearly free. A per-channel criterion would remove {a, c}; the greedy removes {a, b}."""
    a, b, c = 0, 1, 2
    gram = torch.tensor([[1.0, -1.1, 0.0], [-1.1, 1.2, 0.0], [0.0, 0.0, 1.1]], dtype=torch.float64)
    scores = greedy_scores(gram)
    assert torch.argsort(scores).tolist() == [a, b, c]
    assert float(scores[a]) == 1.0
    assert float(scores[b]) == math.nextafter(1.0, math.inf)  # error fell to 0: running maximum
    assert float(scores[c]) == pytest.approx(math.sqrt(1.1))


def test_layerwise_and_global_plans_follow_the_scores(tiny):
    ctx = tiny.context()
    crit = get_criterion("bn-error")
    scores = crit.scores(ctx)
    layerwise = crit.plan(ctx, 0.25, "layerwise")
    assert set(layerwise.remove["conv1"]) == set(torch.argsort(scores["conv1"])[:3].tolist())
    assert {DEAD, TWIN} <= set(layerwise.remove["conv1"])
    global_plan = crit.plan(ctx, 0.25, "global")
    assert global_plan.count() == 5
    assert {DEAD, TWIN} <= set(global_plan.remove["conv1"])


def test_same_inputs_give_identical_scores(tiny):
    a = get_criterion("bn-error").scores(tiny.context(seed=1))
    b = get_criterion("bn-error").scores(tiny.context(seed=1))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_residual_stream_adds_the_chains_that_run_before_each_consumer():
    """The stem channel of a CIFAR ResNet is the sum of the stem BN and every later block's bn2
    (identity shortcuts in stage 1, the option-A shortcut moves it to position 8 + c in stage 2
    and 24 + c in stage 3): N(Σβ, Σγ²) over the chains that ran before the consumer, rectified."""
    torch.manual_seed(0)
    model = CifarResNet((2, 1, 1)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.0)
                m.bias.normal_()
    x = torch.randn(2, 3, 16, 16)
    groups = {g.name: g for g in find_channel_groups(model, x)}
    trace = trace_calls(model, x[:1])
    c = torch.arange(16)

    def expected(chains):
        beta = sum(bn.bias.detach().double()[c + shift] for bn, shift in chains)
        gamma2 = sum(bn.weight.detach().double()[c + shift] ** 2 for bn, shift in chains)
        return rectified_moments(beta, gamma2.sqrt())

    stage1 = [(model.bn1, 0), (model.layer1[0].bn2, 0)]
    every = stage1 + [(model.layer1[1].bn2, 0), (model.layer2[0].bn2, 8), (model.layer3[0].bn2, 24)]
    for consumer, chains in (("layer1.1.conv1", stage1), ("linear", every)):
        got = channel_moments(model, groups["conv1"], trace, before=trace.first_call[consumer])
        want = expected(chains)
        assert torch.allclose(got.mean, want.mean) and torch.allclose(got.var, want.var), consumer
    scores = get_criterion("bn-error").scores(ScoringContext(model, list(groups.values()), [(x, torch.zeros(2))]))
    assert all(s.shape == (groups[n].size,) and bool(torch.isfinite(s).all()) for n, s in scores.items())


def test_without_batchnorm_a_channel_is_its_filter_on_white_input():
    """LeNet-5 has no BatchNorm: pre-activation N(b_c, ‖W_c‖²), and no output scale."""
    info = build_model("lenet5")
    x = info.example_input(2)
    groups = find_channel_groups(info.model, x)
    trace = trace_calls(info.model, x[:1])
    conv = next(g for g in groups if g.producers()[0].module.startswith("features"))
    module = info.model.get_submodule(conv.producers()[0].module)
    moments = channel_moments(info.model, conv, trace, rectify=False)
    assert torch.allclose(moments.mean, module.bias.detach().double())
    assert torch.allclose(moments.var, (module.weight.detach().double() ** 2).flatten(1).sum(dim=1))
    scores = get_criterion("bn-error").scores(ScoringContext(info.model, groups, [(x, torch.zeros(2))]))
    assert all(bool(torch.isfinite(s).all()) and s.min() >= 0 for s in scores.values())
