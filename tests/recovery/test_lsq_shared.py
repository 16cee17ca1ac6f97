"""``recon``'s scoring pass takes ``lsq``'s dense capture too (pytest_prune.recovery.lsq_shared):
the same scores and the same refit weights, bit for bit, with no dense pass left for ``lsq``, also
for a plan that spares a whole group (the capture holds every layer any plan can refit)."""

from __future__ import annotations

import torch

from hand_pruned import randomise_bn, tiny_bundle
from pytest_prune.criteria import ScoringContext
from pytest_prune.criteria.recon import Reconstruction, rebatched
from pytest_prune.models.cifar_resnet import cifar_resnet
from pytest_prune.plan import PrunePlan, plan_layerwise
from pytest_prune.recovery import lsq_cache, parse_recovery
from pytest_prune.recovery.lsq_shared import SharedLsqCapture, starts_with
from pytest_prune.surgery import find_channel_groups, prune_model

SHAPE = (3, 16, 16)
# 300 calibration images: lsq's pass is 3 batches (128, 128, 44); recon reads the first 200, so
# its last batch crosses the limit and the hooks must take that batch's first 72 images only
RECON_IMAGES = 200


def _setup():
    torch.manual_seed(0)
    dense = randomise_bn(cifar_resnet(20)).eval()
    example = torch.randn((2,) + SHAPE, generator=torch.Generator().manual_seed(0))
    return dense, find_channel_groups(dense, example), example, tiny_bundle(shape=SHAPE, calibration=300)


def _scores(dense, groups, data, shared=None):
    ctx = ScoringContext(dense, groups, batches=data.calibration_batches(None, 64), shared_dense_pass=shared)
    return Reconstruction(max_samples=RECON_IMAGES).scores(ctx)


def _shared(dense, groups, data):
    return SharedLsqCapture(parse_recovery("lsq").steps[0], dense, data, groups, 0, torch.device("cpu"))


def _lsq_counting_dense_passes(dense, groups, model, plan, data):
    calls = [0]
    hook = dense.conv1.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        out = parse_recovery("lsq").recover(dense, model, data, seed=0, groups=groups, plan=plan).model
    finally:
        hook.remove()
    return out, calls[0]


def _assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_recon_and_lsq_share_one_dense_pass_with_the_same_results():
    dense, groups, example, data = _setup()
    lsq_cache._CACHE.clear()
    alone_scores = _scores(dense, groups, data)
    plan = plan_layerwise(groups, alone_scores, 0.5)  # every group loses channels
    pruned = prune_model(dense, groups, plan, example)
    alone, alone_passes = _lsq_counting_dense_passes(dense, groups, pruned, plan, data)
    assert alone_passes == 3  # lsq's own dense pass: 300 images in 3 batches

    lsq_cache._CACHE.clear()
    scores = _scores(dense, groups, data, _shared(dense, groups, data))
    assert scores.keys() == alone_scores.keys()
    for name in scores:
        assert torch.equal(scores[name], alone_scores[name]), name
    shared, passes = _lsq_counting_dense_passes(dense, groups, pruned, plan, data)
    assert passes == 0  # recon's pass took lsq's capture
    _assert_same_weights(alone, shared)
    assert any(not torch.equal(a, b) for a, b in zip(shared.state_dict().values(), pruned.state_dict().values()))


def test_a_plan_that_spares_a_group_takes_the_shared_capture_too():
    dense, groups, example, data = _setup()
    scores = _scores(dense, groups, data)
    spared = groups[1].name
    plan = PrunePlan({k: v for k, v in plan_layerwise(groups, scores, 0.5).remove.items() if k != spared})
    pruned = prune_model(dense, groups, plan, example)
    lsq_cache._CACHE.clear()
    alone, _ = _lsq_counting_dense_passes(dense, groups, pruned, plan, data)

    lsq_cache._CACHE.clear()
    _scores(dense, groups, data, _shared(dense, groups, data))
    shared, passes = _lsq_counting_dense_passes(dense, groups, pruned, plan, data)
    assert passes == 0  # it refits fewer layers than were captured: still a hit
    _assert_same_weights(alone, shared)


def test_the_shared_pass_refuses_images_it_does_not_start_with():
    dense, groups, _, data = _setup()
    lsq_cache._CACHE.clear()
    other = torch.randn((RECON_IMAGES,) + SHAPE, generator=torch.Generator().manual_seed(5))
    assert not _shared(dense, groups, data).run_with([], [other])
    assert dense not in lsq_cache._CACHE  # nothing ran, nothing kept


def test_starts_with_compares_images_across_other_batchings():
    images = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    batches = list(images.split(4))  # 4, 4, 2
    assert starts_with(batches, list(images[:7].split(3)))  # 3, 3, 1
    assert starts_with(batches, [images])
    assert not starts_with(batches, [torch.cat([images, images[:1]])])  # one image more than there is
    changed = images[:7].clone()
    changed[5, 1] += 1e-6
    assert not starts_with(batches, list(changed.split(3)))
    assert list(map(len, rebatched(list(images[:7].split(3)), 4))) == [4, 3]
    assert torch.equal(torch.cat(list(rebatched(list(images.split(3)), 4))), images)


def test_a_run_hands_recon_the_capture_of_its_first_lsq_step():
    """What the plugin sets (``run.recoveries`` from ``--prune-recovery``) decides whether recon's
    scoring context carries lsq's capture, and whose: the first lsq step's images."""
    from pytest_prune.pipeline.run import PruneRun
    from pytest_prune.pipeline.settings import RunSettings

    run = PruneRun(RunSettings(model="lenet5"))
    assert run._scoring_context(Reconstruction()).shared_dense_pass is None  # no recoveries named
    run.recoveries = ("none", "bn+lsq:256", "lsq")
    shared = run._scoring_context(Reconstruction()).shared_dense_pass
    assert isinstance(shared, SharedLsqCapture) and shared.step.images == 256 and shared.dense is run.info.model
    run.recoveries = ("none", "finetune:1")
    assert run._scoring_context(Reconstruction()).shared_dense_pass is None
