"""Data-driven criteria on a layer run twice (shared weights): a channel's score adds its uses.

Known answer: the same weights in two separate layers (the untied twin) give each use its own
channel; the shared model's channel must score what the twin's channels score together.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_prune.criteria import get_criterion
from pytest_prune.criteria.attribution import _captum_explainer, gradient_x_activation
from pytest_prune.criteria.base import ScoringContext
from pytest_prune.surgery import find_channel_groups


class Shared(nn.Module):
    """stem → chunk(2) → one conv block on both halves → cat → head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, 1)
        return self.head(torch.cat([self.block(a), self.block(b)], 1).mean((2, 3)))


class Untied(Shared):
    """The same function with the block's weights copied into a second block for the second half."""

    def __init__(self, shared: Shared):
        super().__init__()
        self.load_state_dict(shared.state_dict())
        self.twin = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.twin.load_state_dict(shared.block.state_dict())

    def forward(self, x):
        a, b = self.stem(x).chunk(2, 1)
        return self.head(torch.cat([self.block(a), self.twin(b)], 1).mean((2, 3)))


@pytest.fixture
def models():
    torch.manual_seed(0)
    shared = Shared()
    with torch.no_grad():
        for bn in (shared.stem[1], shared.block[1]):
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.normal_(0, 0.5)
    shared.eval()
    return shared, Untied(shared).eval()


def _scores(model, criterion, x, y):
    groups = find_channel_groups(model, x[:2])
    ctx = ScoringContext(model, groups, [(x, y)])
    return {g.name: s for g, s in zip(groups, [criterion.scores(ctx)[g.name] for g in groups])}


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)


def test_a_shared_channel_scores_what_its_untied_uses_score_together(models):
    shared, untied = models
    x, y = _data()
    assert torch.allclose(shared(x), untied(x), atol=1e-6)  # the twin is the same function
    criterion = get_criterion("attribution")
    tied, apart = _scores(shared, criterion, x, y), _scores(untied, criterion, x, y)
    assert set(apart) == {"stem.0", "block.0", "twin.0"} and set(tied) == {"stem.0", "block.0"}
    torch.testing.assert_close(tied["block.0"], apart["block.0"] + apart["twin.0"], rtol=1e-5, atol=1e-8)
    # an equal chunk bundles stem channels p and p + 3 in both models: the same scores
    torch.testing.assert_close(tied["stem.0"], apart["stem.0"], rtol=1e-5, atol=1e-8)


def test_gradient_x_activation_equals_captum_where_captum_applies(models):
    _, untied = models
    x, y = _data()
    keys = [("stem.2", 0), ("block.2", 0), ("twin.2", 0)]
    ours = gradient_x_activation(untied, x, y, keys)
    theirs = _captum_explainer(untied, keys)(x, y)
    for key in keys:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-7)
