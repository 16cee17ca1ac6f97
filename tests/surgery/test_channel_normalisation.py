"""Normalisation over channels (ConvNeXt's LayerNorm2d and LayerNorm): refused by decision, in one
error that names every layer ``--prune-ignore`` needs; with those kept, the rest prunes exactly."""

import re

import pytest
import torch
import torchvision

from pytest_prune.equivalence import max_abs_difference
from pytest_prune.errors import TraceError
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups, prune_model


def test_convnext_refusal_names_every_layer_to_ignore_and_the_rest_prunes_exactly():
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(TraceError) as refused:
        find_channel_groups(model, x)
    message = str(refused.value)
    assert "normalises over channels" in message and "no masked model computes the pruned function" in message
    ignore = re.search(r"--prune-ignore=(\S+)", message).group(1).split(",")
    assert ignore == ["features.0.0", "features.2.1", "features.4.1", "features.6.1"]  # stem and downsamplers
    groups = find_channel_groups(model, x, ignore=ignore)
    assert len(groups) == 18 and all(g.root.endswith("block.3") for g in groups)  # every block's MLP
    generator = torch.Generator().manual_seed(0)
    plan = PrunePlan({g.name: tuple(sorted(torch.randperm(g.size, generator=generator)[: g.size // 3].tolist()))
                      for g in groups})
    for block in model.modules():  # layer scale 1e-6 at init would hide a wrong surgery
        if hasattr(block, "layer_scale"):
            block.layer_scale.data.fill_(1.0)
    pruned = prune_model(model, groups, plan, x)
    assert max_abs_difference(model, pruned, groups, plan, x) <= 1e-4
