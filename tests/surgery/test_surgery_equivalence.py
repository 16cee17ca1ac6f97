"""The two checks of pytest_prune.equivalence catch what a wrong surgery would do."""

from __future__ import annotations

import math

import torch
from surgery_cases import TOLERANCE, random_plan
from torch import nn

from pytest_prune.equivalence import check_pruned_sizes, expected_shapes, max_abs_difference
from pytest_prune.models import build_model
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups, prune_model


def _pruned_resnet20(zoo_case):
    case = zoo_case("cifar-resnet20")
    plan = random_plan(case.groups, 0.3, seed=1)
    return case, plan, prune_model(case.model, case.groups, plan, case.example)


def test_a_consumer_reading_the_wrong_channels_is_caught(zoo_case):
    case, plan, pruned = _pruned_resnet20(zoo_case)
    assert max_abs_difference(case.model, pruned, case.groups, plan, case.example) <= TOLERANCE
    with torch.no_grad():
        w = pruned.layer2[1].conv1.weight
        w.copy_(w[:, torch.roll(torch.arange(w.shape[1]), 1)])
    assert max_abs_difference(case.model, pruned, case.groups, plan, case.example) > 1e-3


def test_batchnorm_statistics_make_a_leaked_shift_visible(zoo_case):
    """The reference zeroes BatchNorm scale and shift too; zeroing the conv alone would leak."""
    case, plan, pruned = _pruned_resnet20(zoo_case)
    leaky = build_model("cifar-resnet20").model
    leaky.load_state_dict(case.model.state_dict())
    leaky.eval()
    by_name = {g.name: g for g in case.groups}
    with torch.no_grad():
        for name, positions in plan.remove.items():
            for member in by_name[name].producers():
                module = leaky.get_submodule(member.module)
                if isinstance(module, nn.Conv2d):
                    module.weight[[i for p in positions for i in member.indices[p]]] = 0
        diff = (leaky(case.example) - pruned.eval()(case.example)).abs().max()
    assert diff > 1e-2


def test_outputs_of_another_shape_are_infinitely_far():
    model, x = build_model("lenet5").model, torch.randn(2, 1, 32, 32)
    groups = find_channel_groups(model, x)
    plan = PrunePlan({"features.0": (0,)})
    pruned = prune_model(model, groups, plan, x)
    pruned.classifier[5] = nn.Linear(84, 9)
    assert max_abs_difference(model, pruned, groups, plan, x) == math.inf


def test_expected_shapes_count_flattened_consumers_and_batchnorm_statistics():
    lenet = build_model("lenet5").model
    lenet_groups = find_channel_groups(lenet, torch.randn(2, 1, 32, 32))
    shapes = expected_shapes(lenet, lenet_groups, PrunePlan({"features.3": (0, 7)}))
    assert shapes["features.3.weight"] == (14, 6, 5, 5) and shapes["features.3.bias"] == (14,)
    assert shapes["classifier.1.weight"] == (120, 400 - 2 * 25)  # 5x5 positions per channel
    assert shapes["classifier.1.bias"] == (120,)
    resnet = build_model("cifar-resnet20").model
    resnet_groups = find_channel_groups(resnet, torch.randn(2, 3, 32, 32))
    shapes = expected_shapes(resnet, resnet_groups, PrunePlan({"conv1": (1, 2), "layer1.0.conv1": (0,)}))
    assert shapes["bn1.running_var"] == (14,) and shapes["layer3.2.bn2.running_mean"] == (62,)
    assert shapes["bn1.num_batches_tracked"] == ()
    # one conv losing output channels to one group and input channels to another
    assert shapes["layer1.0.conv2.weight"] == (14, 15, 3, 3)


def test_size_check_reports_unpruned_running_statistics(zoo_case):
    case, plan, pruned = _pruned_resnet20(zoo_case)
    assert check_pruned_sizes(case.model, pruned, case.groups, plan).ok
    pruned.bn1.running_mean = torch.zeros(16)
    report = check_pruned_sizes(case.model, pruned, case.groups, plan)
    assert not report.ok and report.mismatches[0].startswith("bn1.running_mean: expected (11,)")
    assert report.expected_parameters == report.pruned_parameters  # buffers are not parameters


def test_difference_is_measured_in_eval_mode_and_modes_come_back(zoo_case):
    case, plan, pruned = _pruned_resnet20(zoo_case)
    pruned.train()
    assert max_abs_difference(case.model, pruned, case.groups, plan, case.example) <= TOLERANCE
    assert all(m.training for m in pruned.modules())
