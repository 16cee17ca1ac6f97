"""Recovery on models pruned by the surgery module (``prune_model``), not by hand."""

from __future__ import annotations

import pytest
import torch

from hand_pruned import randomise_bn, state_of, tiny_bundle
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.models.cifar_resnet import cifar_resnet
from pytest_prune.models.lenet5 import LeNet5
from pytest_prune.plan import plan_layerwise
from pytest_prune.recovery import parse_recovery
from pytest_prune.surgery import find_channel_groups, prune_model


def _pruned(model, shape, ratio=0.5):
    example = torch.randn((2,) + shape, generator=torch.Generator().manual_seed(0))
    groups = find_channel_groups(model, example)
    plan = plan_layerwise(groups, get_criterion("l1").scores(ScoringContext(model, groups)), ratio)
    return prune_model(model, groups, plan, example), groups, plan


@pytest.mark.parametrize("name", ["lenet5", "cifar-resnet20"])
def test_lsq_refits_every_layer_that_reads_pruned_channels(name):
    torch.manual_seed(0)
    if name == "lenet5":
        # more images than the widest refit layer has inputs (the first linear layer: 400 → 200)
        dense, shape, images = LeNet5().eval(), (1, 32, 32), 512
    else:
        # 16×16 inputs keep it quick; 128 images × 16 positions are 2,048 rows for ≤ 288 inputs
        dense, shape, images = randomise_bn(cifar_resnet(20)).eval(), (3, 16, 16), 128
    data = tiny_bundle(shape=shape, calibration=images)
    # realistic BatchNorm statistics for the dense model first (a no-op for LeNet-5)
    dense = parse_recovery("bn").recover(dense, dense, data, seed=0).model
    pruned, groups, plan = _pruned(dense, shape)
    shapes = {k: v.shape for k, v in state_of(pruned).items()}
    result = parse_recovery("lsq").recover(dense, pruned, data, seed=0, groups=groups, plan=plan)
    assert result.steps[0].skipped == {}
    dense_modules = dict(dense.named_modules())
    narrower = [
        n for n, m in pruned.named_modules()
        if hasattr(m, "weight") and m.weight is not None and m.weight.dim() > 1
        and m.weight.shape[1] < dense_modules[n].weight.shape[1]
    ]
    refit = [note.split(":")[0] for note in result.steps[0].notes if " rows × " in note]
    assert refit == narrower and refit  # every such layer, in forward order
    assert {k: v.shape for k, v in result.model.state_dict().items()} == shapes
    x = data.evaluation.tensors[0]
    with torch.no_grad():
        before = (pruned(x) - dense(x)).pow(2).mean()
        after = (result.model(x) - dense(x)).pow(2).mean()
    assert after < 0.5 * before
