"""Auxiliary heads that run only in training (GoogLeNet, Inception-v3): pruned in eval mode without
any option, the heads left alone with a note, and the pruned model exact where they do not run."""

import pytest
import torch
import torchvision
from torch import nn

from pytest_prune.equivalence import max_abs_difference
from pytest_prune.errors import TraceError
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups, prune_model


class WithAuxHead(nn.Module):
    def __init__(self, aux_in_training: bool = True):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU())
        self.aux = nn.Sequential(nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
        self.aux_in_training = aux_in_training

    def forward(self, x):
        features = self.trunk(x)
        out = self.head(features)
        if self.training and self.aux_in_training:
            return out, self.aux(features)
        return out


def _random_plan(groups, fraction=0.3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return PrunePlan({g.name: tuple(sorted(torch.randperm(g.size, generator=generator)[: max(1, int(fraction * g.size))].tolist()))
                      for g in groups})


def _prunes_exactly(model, size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    notes = []
    groups = find_channel_groups(model.eval(), x, notes=notes)
    plan = _random_plan(groups)
    pruned = prune_model(model, groups, plan, x)
    assert plan.count() > 0
    assert max_abs_difference(model, pruned, groups, plan, x) <= 1e-5
    return groups, notes


def test_a_training_only_head_is_left_alone_with_a_note():
    groups, notes = _prunes_exactly(WithAuxHead(), 12)
    assert notes and "aux run only in training mode" in notes[0]
    assert all(not g.root.startswith("aux") for g in groups) and any(g.root.startswith("trunk") for g in groups)


def test_a_layer_that_never_runs_is_still_refused():
    with pytest.raises(TraceError, match="'aux.0' .* was not run by the forward pass"):
        find_channel_groups(WithAuxHead(aux_in_training=False).eval(), torch.randn(2, 3, 12, 12))


def test_googlenet_with_its_auxiliary_heads():
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    _, notes = _prunes_exactly(model, 96)
    assert "aux1, aux2 run only in training mode" in notes[0]


@pytest.mark.slow
def test_inception_v3_with_its_auxiliary_head():
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    _, notes = _prunes_exactly(model, 299)  # the auxiliary head needs the full input size
    assert "AuxLogits run only in training mode" in notes[0]
