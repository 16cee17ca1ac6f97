"""``finetune:E`` / ``finetune-kd:E``: training reduces the loss it optimises, within a batch cap."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hand_pruned import hand_prune, tiny_bundle, tiny_conv_net
from pytest_prune.recovery import RecoveryPipeline, parse_recovery
from pytest_prune.recovery.finetune import DistilledFineTune, FineTune

CHAINS = {("conv1", "bn1", "conv2"): [0, 1, 4, 6]}


def _confident_net(seed: int):
    """A tiny net with confident logits and BatchNorm statistics that fit the data."""
    dense = tiny_conv_net(seed)
    with torch.no_grad():
        dense.fc.weight.mul_(10.0)
    return parse_recovery("bn").recover(dense, dense, tiny_bundle(calibration=512), seed=0).model


def _setup(labels_from_another_net: bool = False):
    dense = _confident_net(2)
    labeller = _confident_net(5) if labels_from_another_net else dense
    return dense, hand_prune(dense, CHAINS), tiny_bundle(train=1024, labeller=labeller)


def _train_loss(model, data, batches=4):
    x, y = data.train.tensors
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x[: 128 * batches]), y[: 128 * batches]))


def test_finetune_reduces_the_training_loss_within_max_batches():
    dense, pruned, data = _setup(labels_from_another_net=True)  # a task it has to learn
    lines: list[str] = []
    step = FineTune(2, max_batches=4)  # the documented defaults, 2 × 4 batches of 128
    result = RecoveryPipeline((step,)).recover(dense, pruned, data, seed=0, progress=lines.append)
    assert _train_loss(result.model, data) < 0.5 * _train_loss(pruned, data)  # measured: 6.1 → 1.6
    notes = result.steps[0].notes
    assert len(notes) == 2 and all("over 4 batches" in n for n in notes)  # the cap held
    assert [line for line in lines if "epoch" in line] == [f"finetune:2 {n}" for n in notes]
    assert all(p.grad is None for p in result.model.parameters())


def test_finetune_kd_moves_the_logits_towards_the_dense_model():
    dense, pruned, data = _setup()
    x = data.train.tensors[0][:512]

    def distance(model):
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(model.eval()(x) / 4, 1), F.softmax(dense(x) / 4, 1), reduction="batchmean"))

    result = RecoveryPipeline((DistilledFineTune(2, max_batches=6),)).recover(dense, pruned, data, seed=0)
    assert distance(result.model) < 0.5 * distance(pruned)  # measured: 0.116 → 0.011


def test_documented_defaults():
    step = parse_recovery("finetune:3").steps[0]
    assert (step.epochs, step.lr, step.momentum, step.weight_decay, step.batch_size, step.max_batches) == (
        3, 0.01, 0.9, 5e-4, 128, None
    )
    kd = parse_recovery("finetune-kd:1").steps[0]
    assert isinstance(kd, DistilledFineTune) and (kd.TEMPERATURE, kd.ALPHA) == (4.0, 0.9)
