"""``bn``: running statistics are the exact moments of each BatchNorm's input; nothing else moves."""

from __future__ import annotations

import torch
from torch import nn

from hand_pruned import hand_prune, modes_of, randomise_bn, state_of, tiny_bundle, tiny_conv_net
from pytest_prune.recovery import RecoveryPipeline, parse_recovery
from pytest_prune.recovery.bn import BatchNormRecalibration, ChannelMoments


class DropoutFirst(nn.Module):
    """dropout → conv → BN → ReLU → conv → BN: the first BN's input is known in closed form."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6, momentum=0.3)
        self.conv2 = nn.Conv2d(6, 5, 3)
        self.bn2 = nn.BatchNorm2d(5)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(self.drop(x))))))


def _recalibrate(model, data, images=None):
    step = BatchNormRecalibration(images)
    return RecoveryPipeline((step,)).recover(model, model, data, seed=0)


def test_running_stats_are_the_exact_moments_of_the_bn_input():
    torch.manual_seed(0)
    model = randomise_bn(DropoutFirst()).eval()
    # 300 images: batches of 128, 128 and 44, so a per-batch average would be visibly off
    data = tiny_bundle(calibration=300)
    result = _recalibrate(model, data)
    images = data.calibration.tensors[0]
    with torch.no_grad():
        # dropout stays off during recalibration, so the BN sees conv1 of the clean images
        z = model.conv1(images).double().transpose(0, 1).reshape(6, -1)
    bn = result.model.bn1
    torch.testing.assert_close(bn.running_mean.double(), z.mean(dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), z.var(dim=1, unbiased=True), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(bn.running_mean, model.bn1.running_mean)
    assert result.steps[0].notes == ["2 BatchNorm layers re-estimated on 300 calibration images"]


def test_the_image_count_limits_the_data_used():
    torch.manual_seed(0)
    model = randomise_bn(DropoutFirst()).eval()
    data = tiny_bundle(calibration=300)
    result = _recalibrate(model, data, images=50)
    with torch.no_grad():
        z = model.conv1(data.calibration.tensors[0][:50]).double().transpose(0, 1).reshape(6, -1)
    torch.testing.assert_close(result.model.bn1.running_mean.double(), z.mean(dim=1), rtol=1e-5, atol=1e-6)
    assert parse_recovery("bn:50").steps[0].images == 50


def test_only_running_statistics_change_and_modes_and_momentum_come_back():
    dense = tiny_conv_net()
    pruned = hand_prune(dense, {("conv1", "bn1", "conv2"): [1, 2, 4, 7]})
    pruned.train()
    pruned.bn2.eval()  # mixed flags must come back exactly
    pruned.bn1.momentum = 0.25
    modes = modes_of(pruned)
    result = parse_recovery("bn").recover(dense, pruned, tiny_bundle(), seed=0)
    after, before = state_of(result.model), state_of(pruned)
    changed = {k for k in before if not torch.equal(after[k], before[k])}
    assert changed == {f"{bn}.{s}" for bn in ("bn1", "bn2") for s in ("running_mean", "running_var", "num_batches_tracked")}
    assert modes_of(result.model) == modes
    assert result.model.bn1.momentum == 0.25 and result.model.bn2.momentum == 0.1


def test_pooled_moments_match_one_big_batch():
    g = torch.Generator().manual_seed(1)
    x = 3.0 + 2.0 * torch.randn(37, 4, 5, 5, generator=g)
    acc = ChannelMoments()
    for part in x.split([1, 16, 20]):
        acc.add(part)
    flat = x.double().transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(acc.mean, flat.mean(dim=1))
    torch.testing.assert_close(acc.variance(), flat.var(dim=1, unbiased=True))


def test_layers_without_statistics_or_without_bn_are_reported():
    no_stats = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    report = _recalibrate(no_stats, tiny_bundle()).steps[0]
    assert "track_running_stats=False" in report.skipped["1"]
    plain = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    report = _recalibrate(plain, tiny_bundle()).steps[0]
    assert "nothing to recalibrate" in report.notes[0]


class WithUnusedBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.unused = randomise_bn(nn.BatchNorm2d(4))

    def forward(self, x):
        return self.bn(self.conv(x))


def test_a_bn_the_forward_never_reaches_keeps_its_statistics():
    model = WithUnusedBN().eval()
    result = _recalibrate(model, tiny_bundle())
    assert torch.equal(result.model.unused.running_var, model.unused.running_var)
    assert "never called" in result.steps[0].skipped["unused"]


def test_a_last_batch_of_one_image_is_merged_for_bn1d():
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)).eval()
    data = tiny_bundle(shape=(6,), calibration=129)  # batches of 128 and 1
    result = _recalibrate(model, data)
    with torch.no_grad():
        z = model[0](data.calibration.tensors[0]).double()
    torch.testing.assert_close(result.model[1].running_mean.double(), z.mean(dim=0), rtol=1e-5, atol=1e-6)
