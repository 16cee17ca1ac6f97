"""Known answers worked out by hand from each criterion's documented formula (issue 14).

Every model here is built so that the formula in the criterion's docstring has a closed form; the
expected numbers are written out in the tests (with the arithmetic in comments), never obtained
from the implementation's own helpers. A wrong variant, a wrong average or a wrong normalisation
gives other numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.criteria.cpmc import CPMC
from pytest_prune.groups import ChannelGroup, GroupMember


def _producer_group(name: str, size: int) -> ChannelGroup:
    """A group whose only member is the producer ``name`` (the data criteria read producers)."""
    per_channel = tuple((c,) for c in range(size))
    return ChannelGroup(name, name, tuple(range(size)), (GroupMember(name, "producer", per_channel),))


# -- taylor and taylor-plain ---------------------------------------------------------------------


class LinearReadout(nn.Module):
    """a = conv1(x) (1x1, 1 → 2 channels, weights 1, no bias); output = Σ_{c,m} U[c,m]·a[c,m].

    With the loss L = mean over the batch of the output, each image's own gradient is
    ∂L_x/∂a[c,m] = U[c,m], so a[c,m]·∂L/∂a[c,m] = x[m]·U[c,m] in closed form.
    """

    def __init__(self, u: torch.Tensor):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv1.weight.fill_(1.0)
        self.register_buffer("u", u.reshape(1, 2, 1, -1))

    def forward(self, x):
        return (self.conv1(x) * self.u).sum(dim=(1, 2, 3))


class MeanOutput(nn.Module):
    def forward(self, out, y):
        return out.mean()


# U: channel 0 reads its two positions with opposite signs, channel 1 with the same sign.
TAYLOR_U = torch.tensor([[2.0, -2.0], [1.0, 1.0]])
# three images of M = 2 positions (one row each), in calibration batches of two and one
TAYLOR_X = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [3.0, 1.0]])


def _taylor_context() -> ScoringContext:
    model = LinearReadout(TAYLOR_U).eval()
    x = TAYLOR_X.reshape(3, 1, 1, 2)
    y = torch.zeros(3, dtype=torch.long)
    batches = [(x[:2], y[:2]), (x[2:], y[2:])]
    return ScoringContext(model, [_producer_group("conv1", 2)], batches, loss_fn=MeanOutput())


def _unit(v: list[float]) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float64)
    return t / torch.linalg.vector_norm(t)


def test_taylor_and_taylor_plain_match_their_formulas_and_rank_differently():
    """Products a[m]·∂L/∂a[m] = x[m]·U[c,m], per image (the three rows of TAYLOR_X):

        channel 0: [2, -2], [-2, 2], [6, -2]        channel 1: [1, 1], [-1, -1], [3, 1]

    taylor  Θ⁺ = mean_x (1/2) Σ_m max(0, ·):  ch0 (1 + 1 + 3)/3 = 5/3   ch1 (1 + 0 + 2)/3 = 1
    plain   Θ  = mean_x |(1/2) Σ_m ·|:         ch0 (0 + 0 + 2)/3 = 2/3   ch1 (1 + 1 + 2)/3 = 4/3

    then each divided by the group's L2 norm. ``taylor`` keeps channel 0, ``taylor-plain``
    channel 1. Wrong readings give other numbers: the clamp after the mean (max(0, mean)) gives
    ch0 = 2/3 for taylor; for plain, |·| of a batch's sum instead of each image's term gives
    ch1 = (|1 − 1| + |2|)/3 = 2/3, a tie with ch0 (batches of 2 and 1); averaging batch means instead of images gives ch0 = (1 + 3)/2 = 2,
    ch1 = (1/2 + 2)/2 = 5/4 for taylor (ratio 8/5, not 5/3).
    """
    ctx = _taylor_context()
    positive = get_criterion("taylor").scores(ctx)["conv1"]
    plain = get_criterion("taylor-plain").scores(ctx)["conv1"]
    assert torch.allclose(positive, _unit([5 / 3, 1.0]), rtol=0, atol=1e-9), positive
    assert torch.allclose(plain, _unit([2 / 3, 4 / 3]), rtol=0, atol=1e-9), plain
    assert int(torch.argmax(positive)) == 0 and int(torch.argmax(plain)) == 1  # the rankings differ


def test_taylor_closed_form_on_random_readouts():
    """The same closed form for a random readout and random images, computed here from the
    docstring's formula: prod[x, c, m] = x[m]·U[c, m]."""
    gen = torch.Generator().manual_seed(11)
    u = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    model = LinearReadout(u.float()).eval()
    images = x.float().reshape(5, 1, 1, 6)
    y = torch.zeros(5, dtype=torch.long)
    ctx = ScoringContext(model, [_producer_group("conv1", 2)], [(images[:3], y[:3]), (images[3:], y[3:])], loss_fn=MeanOutput())
    xf = x.float().double()
    uf = u.float().double()
    prod = xf[:, None, :] * uf[None, :, :]  # (images, channels, positions)
    theta_positive = prod.clamp(min=0).mean(dim=2).mean(dim=0)
    theta_plain = prod.mean(dim=2).abs().mean(dim=0)
    positive = get_criterion("taylor").scores(ctx)["conv1"]
    plain = get_criterion("taylor-plain").scores(ctx)["conv1"]
    assert torch.allclose(positive, theta_positive / theta_positive.norm(), atol=1e-6)
    assert torch.allclose(plain, theta_plain / theta_plain.norm(), atol=1e-6)


# -- attribution-corr ----------------------------------------------------------------------------


class CorrelationNet(nn.Module):
    """Two colour channels x0, x1 (2x2 pixels); logit 0 = Σ_pixels x0, logit 1 = 0.

    conv1 (1x1, 2 → 5 channels) makes, per pixel: ch0 = 2·x0, ch1 = 10 − x0, ch2 = x1,
    ch3 = x0 + x1, ch4 = 3 (constant). Only ch0 feeds the logit (logit 0 = ½ Σ ch0 = Σ x0).
    The logit is linear in x, so integrated gradients from the zero baseline are exact whatever the
    steps: IG = x·∂logit/∂x = (x0, 0), and the attribution map A = Σ_colour |IG| = |x0| = x0
    (x0 > 0 below).
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 5, 1)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]).reshape(5, 2, 1, 1))
            self.conv1.bias.copy_(torch.tensor([0.0, 10.0, 0.0, 0.0, 3.0]))

    def forward(self, x):
        a = self.conv1(x)
        logit0 = 0.5 * a[:, 0].sum(dim=(1, 2))
        return torch.stack([logit0, torch.zeros_like(logit0)], dim=1)


def test_attribution_corr_scores_are_the_mean_pearson_correlation_with_the_ig_map():
    """Pixels in reading order. Image 1: x0 = [1, 2, 3, 4], x1 = [3, 1, 1, 3]; centred,
    x0 − 2.5 = [-1.5, -.5, .5, 1.5] (squared norm 5) and x1 − 2 = [1, -1, -1, 1] (squared norm 4)
    are orthogonal. Image 2: x0 = x1 = [4, 3, 2, 1]. A = x0 in both (see CorrelationNet); the
    feature maps are positive, so rectifying them changes nothing, and at the input's size the
    bilinear resize is the identity.

        ch0 = 2·x0:     corr +1 and +1                            → score 1
        ch1 = 10 − x0:  corr −1 and −1 (Pearson ignores the shift) → score −1
        ch2 = x1:       corr 0 (orthogonal) and +1                → score 1/2
        ch3 = x0 + x1:  corr 5/√(5·(5 + 4)) = √5/3 and +1         → score (√5/3 + 1)/2 ≈ 0.873
        ch4 = 3:        a constant map scores 0                   → score 0

    So the order is ch0 > ch3 > ch2 > ch4 (constant) > ch1 (anti-correlated), per the docstring.
    An unsigned correlation would score ch1 at +1; a correlation taken over the batch of images
    at once, or an image-weighted mix, would not give 1/2 for ch2.
    """
    x = torch.tensor(
        [
            [[1.0, 2.0, 3.0, 4.0], [3.0, 1.0, 1.0, 3.0]],
            [[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]],
        ]
    ).reshape(2, 2, 2, 2)
    ctx = ScoringContext(CorrelationNet().eval(), [_producer_group("conv1", 5)], [(x, torch.zeros(2, dtype=torch.long))])
    scores = get_criterion("attribution-corr").scores(ctx)["conv1"]
    expected = torch.tensor([1.0, -1.0, 0.5, (math.sqrt(5) / 3 + 1) / 2, 0.0], dtype=torch.float64)
    assert torch.allclose(scores.double(), expected, atol=1e-5), scores
    assert torch.argsort(scores, descending=True).tolist() == [0, 3, 2, 4, 1]


# -- cpmc ----------------------------------------------------------------------------------------


class TwoLayerNet(nn.Module):
    """conv1 (1 → 2, 3x3, pad 1, bias) → bn1 → ReLU → conv2 (2 → 3, 1x1, no bias) → bn2 → ReLU
    → global average → fc (3 → 2). Input 1x4x4, so both convs have 16 output positions."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv1.weight[0].fill_(1.0)  # Σ|·| = 9
            self.conv1.weight[1].fill_(-0.5)  # Σ|·| = 4.5
            self.conv1.bias.copy_(torch.tensor([7.0, -7.0]))  # biases are not in w
            # conv2.weight[j, k]: rows j (conv2's channels), columns k (conv1's channels)
            self.conv2.weight.copy_(torch.tensor([[1.0, 2.0], [1.0, 0.0], [-1.0, 0.0]]).reshape(3, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.5], [-1.0, 0.0, -0.5]]))

    def forward(self, x):
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def _chain_group(name: str, producers: tuple[str, ...], consumer: str, size: int) -> ChannelGroup:
    per_channel = tuple((c,) for c in range(size))
    members = tuple(GroupMember(p, "producer", per_channel) for p in producers)
    members += (GroupMember(consumer, "consumer", per_channel),)
    return ChannelGroup(name, producers[0], tuple(range(size)), members)


def _cpmc_context() -> ScoringContext:
    groups = [
        _chain_group("conv1", ("conv1", "bn1"), "conv2", 2),
        _chain_group("conv2", ("conv2", "bn2"), "fc", 3),
    ]
    return ScoringContext(TwoLayerNet().eval(), groups, [(torch.zeros(1, 1, 4, 4), torch.zeros(1, dtype=torch.long))])


def test_cpmc_known_answer_with_global_max_normalisation():
    """The terms, by hand:

    w (filter Σ|W[k]| + consumer slice Σ|W_next[:, k]|):
        conv1: k0 = 9 + (1 + 1 + 1) = 12     k1 = 4.5 + (2 + 0 + 0) = 6.5
        conv2: j0 = (1 + 2) + (1 + 1) = 5    j1 = 1 + 0 = 1    j2 = 1 + (.5 + .5) = 2
    f (MACs per sample: weight entries × output positions):
        conv1: 9·16 + 3·16 = 192             conv2: 2·16 + 2·1 = 34
    p (parameters: weights, biases, BatchNorm scale and shift):
        conv1: 9 + 1 + 2 + 3 = 15            conv2: 2 + 0 + 2 + 2 = 6
    Global maxima over every channel: w 12, f 192, p 15, so
        conv1: w̃ = 1, 13/24; f̃ = 1; p̃ = 1            → denominator 3
        conv2: w̃ = 5/12, 1/12, 2/12; f̃ = 17/96; p̃ = 2/5 → denominator 1 + 17/96 + 2/5 = 757/480
    score = w̃ / (1 + f̃ + p̃):
        conv1: 1/3, 13/72
        conv2: (5/12)(480/757) = 200/757, 40/757, 80/757

    Per-layer normalisation would score conv2's j0 at 1/3; dividing by sums instead of maxima,
    or leaving the terms raw, changes every number.
    """
    scores = get_criterion("cpmc").scores(_cpmc_context())
    assert torch.allclose(scores["conv1"].double(), torch.tensor([1 / 3, 13 / 72], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(scores["conv2"].double(), torch.tensor([200 / 757, 40 / 757, 80 / 757], dtype=torch.float64), atol=1e-12)


def test_cpmc_known_answer_global_order_and_weights():
    """Global ranking of the five channels: 1/3 > 200/757 ≈ .264 > 13/72 ≈ .181 > 80/757 > 40/757,
    so removing two channels globally takes conv2's j1 and j2. With α = 2, β = 0 (from the same
    terms): conv1 1/(1 + 2) = 1/3 and (13/24)/3 = 13/72; conv2 denominator 1 + 2·17/96 = 65/48,
    scores (5/12)(48/65) = 4/13, 4/65, 8/65."""
    ctx = _cpmc_context()
    plan = get_criterion("cpmc").plan(ctx, 0.4, "global")
    assert {g: set(c) for g, c in plan.remove.items() if c} == {"conv2": {1, 2}}
    scores = CPMC(alpha=2.0, beta=0.0).scores(ctx)
    assert torch.allclose(scores["conv1"].double(), torch.tensor([1 / 3, 13 / 72], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(scores["conv2"].double(), torch.tensor([4 / 13, 4 / 65, 8 / 65], dtype=torch.float64), atol=1e-12)
