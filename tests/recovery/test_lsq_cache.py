"""``lsq``'s dense capture kept for the next ``lsq`` of the run (pytest_prune.recovery.lsq_cache):
the same weights, bit for bit, without the second dense pass, and a miss whenever the dense
model, the images or the refit layers differ."""

from __future__ import annotations

import torch

from hand_pruned import randomise_bn, tiny_bundle
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.models.cifar_resnet import cifar_resnet
from pytest_prune.plan import PrunePlan, plan_layerwise
from pytest_prune.recovery import lsq_cache, parse_recovery
from pytest_prune.surgery import find_channel_groups, prune_model

SHAPE = (3, 16, 16)


def _setup():
    torch.manual_seed(0)
    dense = randomise_bn(cifar_resnet(20)).eval()
    example = torch.randn((2,) + SHAPE, generator=torch.Generator().manual_seed(0))
    groups = find_channel_groups(dense, example)
    scores = get_criterion("l1").scores(ScoringContext(dense, groups))

    def pruned(ratio):
        plan = plan_layerwise(groups, scores, ratio)
        return prune_model(dense, groups, plan, example), plan

    return dense, groups, pruned, tiny_bundle(shape=SHAPE, calibration=96)


def _dense_calls(dense):
    calls = [0]
    hook = dense.conv1.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls, hook


def _lsq(dense, groups, model_plan, data):
    model, plan = model_plan
    return parse_recovery("lsq").recover(dense, model, data, seed=0, groups=groups, plan=plan).model


def test_a_second_lsq_reuses_the_dense_pass_with_the_same_weights():
    dense, groups, pruned, data = _setup()
    at_03, at_05 = pruned(0.3), pruned(0.5)  # every group pruned: the same layers refit, other outputs kept
    lsq_cache._CACHE.clear()
    alone = _lsq(dense, groups, at_05, data)  # nothing kept yet: its own dense pass

    lsq_cache._CACHE.clear()
    _lsq(dense, groups, at_03, data)  # keeps its capture
    calls, hook = _dense_calls(dense)
    try:
        reused = _lsq(dense, groups, at_05, data)
    finally:
        hook.remove()
    assert calls[0] == 0  # no dense forward pass: the capture of the 0.3 refit served
    for (name, a), b in zip(alone.state_dict().items(), reused.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(alone.state_dict().values(), at_05[0].state_dict().values()))


def test_a_changed_dense_model_or_other_images_miss():
    dense, groups, pruned, data = _setup()
    at_05 = pruned(0.5)
    lsq_cache._CACHE.clear()
    _lsq(dense, groups, at_05, data)
    calls, hook = _dense_calls(dense)
    try:
        _lsq(dense, groups, at_05, tiny_bundle(shape=SHAPE, calibration=96, seed=1))  # other images
        assert calls[0] > 0
        calls[0] = 0
        with torch.no_grad():
            dense.linear.bias.add_(0.0)  # an in-place change, even one that changes no value
        _lsq(dense, groups, at_05, data)
        assert calls[0] > 0
    finally:
        hook.remove()


def test_a_plan_that_spares_a_group_reads_the_same_capture_with_its_own_weights():
    """Positions are drawn over every layer any plan can refit (pytest_prune.recovery.lsq_dense),
    so a plan that spares a whole group refits from the capture a layer-wise plan took, with the
    weights its own pass gives, and the run keeps one capture for both."""
    dense, groups, pruned, data = _setup()
    full_model, full_plan = pruned(0.5)
    spared = PrunePlan({k: v for k, v in full_plan.remove.items() if k != groups[0].name})
    example = torch.randn((2,) + SHAPE, generator=torch.Generator().manual_seed(0))
    at_spared = prune_model(dense, groups, spared, example), spared
    lsq_cache._CACHE.clear()
    alone = _lsq(dense, groups, at_spared, data)

    lsq_cache._CACHE.clear()
    _lsq(dense, groups, (full_model, full_plan), data)
    calls, hook = _dense_calls(dense)
    try:
        reused = _lsq(dense, groups, at_spared, data)
    finally:
        hook.remove()
    assert calls[0] == 0 and len(lsq_cache._CACHE[dense]) == 1
    for (name, a), b in zip(alone.state_dict().items(), reused.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(alone.state_dict().values(), at_spared[0].state_dict().values()))
