"""``lsq``: known answers (absorbed copies, closed-form ridge), forward-order correction, skips,
and the two-pass cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hand_pruned import hand_groups, hand_prune, tiny_bundle, tiny_conv_net
from pytest_prune.recovery import RecoveryPipeline
from pytest_prune.recovery.lsq import (
    LeastSquaresReconstruction,
    channels_first,
    gather_positions,
    input_positions,
    input_rows,
    sample_positions,
)

RIDGE = LeastSquaresReconstruction(None).ridge


def _lsq(dense, pruned, data, ridge=RIDGE, groups=None, plan=None, images=None):
    step = LeastSquaresReconstruction(images, ridge=ridge)
    return RecoveryPipeline((step,)).recover(dense, pruned, data, seed=0, groups=groups, plan=plan)


def _net_with_copied_channels():
    """Channels 6 and 7 after bn1/ReLU are exact copies of channels 0 and 1."""
    dense = tiny_conv_net()
    with torch.no_grad():
        dense.conv1.weight[6:8] = dense.conv1.weight[0:2]
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dense.bn1, name)[6:8] = getattr(dense.bn1, name)[0:2]
    return dense, hand_prune(dense, {("conv1", "bn1", "conv2"): range(6)})


@pytest.mark.parametrize(
    "ridge, tolerance",
    [
        (0.0, 1e-5),  # plain least squares: exact up to float32 rounding
        # Ridge shrinks the weights along each eigen-direction of XᵀX by λ/(e+λ); with
        # λ = ridge · mean eigenvalue (and eigenvalues here within ~30× of the mean) that is a
        # relative change of a few times ``ridge`` (3e-4 measured): 10 · ridge is the bound.
        (RIDGE, 10 * RIDGE),
    ],
)
def test_the_consumer_absorbs_the_weights_of_removed_copies(ridge, tolerance):
    dense, pruned = _net_with_copied_channels()
    weight = dense.conv2.weight.detach()
    absorbed = weight[:, :6].clone()
    absorbed[:, 0:2] += weight[:, 6:8]
    data = tiny_bundle()
    result = _lsq(dense, pruned, data, ridge)
    refit = result.model.conv2.weight.detach()
    assert (refit - absorbed).norm() / absorbed.norm() < tolerance
    x = data.evaluation.tensors[0]  # images the fit never saw, every position
    with torch.no_grad():
        h = torch.relu(dense.bn1(dense.conv1(x)))
        want, got = dense.conv2(h), result.model.conv2(h[:, :6])
    assert (got - want).norm() / want.norm() < tolerance
    assert (pruned.conv2(h[:, :6]) - want).norm() / want.norm() > 0.1  # it did need the refit


def _closed_form_ridge(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """[Wᵀ; b] minimising ‖[x 1]θ − y‖² + λ‖W‖², λ = ridge·tr(xᵀx)/D, as an augmented lstsq."""
    x, y = x.double(), y.double()
    d = x.shape[1]
    lam = ridge * float((x * x).sum()) / d
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    penalty = torch.cat([lam**0.5 * torch.eye(d, dtype=x.dtype), torch.zeros(d, 1, dtype=x.dtype)], dim=1)
    stacked_a = torch.cat([a, penalty])
    stacked_y = torch.cat([y, torch.zeros(d, y.shape[1], dtype=y.dtype)])
    return torch.linalg.lstsq(stacked_a, stacked_y, driver="gelsd").solution


def _as_theta(layer: nn.Linear) -> torch.Tensor:
    return torch.cat([layer.weight.detach().T, layer.bias.detach()[None, :]]).double()


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


@pytest.mark.parametrize("ridge", [0.0, RIDGE, 0.1])
def test_a_linear_layer_gets_the_closed_form_ridge_solution(ridge):
    dense = _mlp()
    pruned = hand_prune(dense, {("2", "4"): [0, 2, 3, 5]})  # layer 4 reads 4 of 6 hidden units
    data = tiny_bundle(shape=(10,), calibration=200)
    x = data.calibration.tensors[0]
    with torch.no_grad():
        hidden, target = pruned[:4](x), dense(x)
    result = _lsq(dense, pruned, data, ridge)
    torch.testing.assert_close(_as_theta(result.model[4]), _closed_form_ridge(hidden, target, ridge), rtol=1e-5, atol=1e-6)
    assert list(result.steps[0].notes[0].split(":")[0:1]) == ["4"]


def test_layers_are_refit_in_order_on_inputs_from_the_refit_network():
    """Layer 2 has pruned inputs and outputs; layer 4 must then be fit to what refit layer 2 gives."""
    dense = _mlp(1)
    chains = {("0", "2"): [0, 1, 3, 4, 6], ("2", "4"): [1, 2, 4, 5]}
    pruned = hand_prune(dense, chains)
    groups, plan = hand_groups(chains, {("0", "2"): 8, ("2", "4"): 6})
    data = tiny_bundle(shape=(10,), calibration=200)
    x = data.calibration.tensors[0]

    without = _lsq(dense, pruned, data)
    assert "no groups and plan" in without.steps[0].skipped["2"]

    result = _lsq(dense, pruned, data, groups=groups, plan=plan)
    assert result.steps[0].skipped == {}
    with torch.no_grad():
        kept = torch.tensor(chains[("2", "4")])
        first_in, first_target = pruned[:2](x), dense[:3](x)[:, kept]
        theta_2 = _closed_form_ridge(first_in, first_target, RIDGE)
        torch.testing.assert_close(_as_theta(result.model[2]), theta_2, rtol=1e-5, atol=1e-6)
        second_in = result.model[:4](x)  # through the refit layer 2, not the one-shot one
        theta_4 = _closed_form_ridge(second_in, dense(x), RIDGE)
    torch.testing.assert_close(_as_theta(result.model[4]), theta_4, rtol=1e-5, atol=1e-6)


def test_lsq_brings_the_pruned_network_closer_to_the_dense_one():
    dense = tiny_conv_net(3)
    chains = {("conv1", "bn1", "conv2"): [1, 2, 5, 7], ("conv2", "bn2", "fc"): [0, 3, 4, 6]}
    pruned = hand_prune(dense, chains)
    groups, plan = hand_groups(chains, {c: 8 for c in chains})
    data = tiny_bundle()
    result = _lsq(dense, pruned, data, groups=groups, plan=plan)
    x = data.evaluation.tensors[0]
    with torch.no_grad():
        before = (pruned(x) - dense(x)).pow(2).mean()
        after = (result.model(x) - dense(x)).pow(2).mean()
    assert after < 0.5 * before
    assert [n.split(":")[0] for n in result.steps[0].notes[:2]] == ["conv2", "fc"]  # forward order


class GroupedConv(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.grouped = nn.Conv2d(width, 4, 3, groups=2)

    def forward(self, x):
        return self.grouped(self.stem(x))


class SharedLinear(nn.Module):
    """One linear layer applied to two branches: one set of weights in two places."""

    def __init__(self, width: int):
        super().__init__()
        self.left, self.right = nn.Linear(12, width), nn.Linear(12, width)
        self.shared = nn.Linear(width, 4)

    def forward(self, x):
        x = x.flatten(1)[:, :12]
        return self.shared(self.left(x)) + self.shared(self.right(x))


def test_grouped_and_shared_layers_are_skipped_with_a_reason():
    torch.manual_seed(0)
    report = _lsq(GroupedConv(6).eval(), GroupedConv(4).eval(), tiny_bundle()).steps[0]
    assert "grouped convolution (groups=2)" in report.skipped["grouped"]
    dense = SharedLinear(5).eval()
    pruned = hand_prune(dense, {("left", "right", "shared"): [0, 2, 3]})
    result = _lsq(dense, pruned, tiny_bundle())
    assert "shared weights" in result.steps[0].skipped["shared"]
    assert torch.equal(result.model.shared.weight, pruned.shared.weight)


def test_only_layers_with_pruned_inputs_change_and_the_dense_model_is_called_in_batches():
    dense = tiny_conv_net()
    pruned = hand_prune(dense, {("conv1", "bn1", "conv2"): [0, 3, 4, 7]})
    calls = {"dense": 0, "pruned": 0}
    dense.register_forward_pre_hook(lambda *_: calls.__setitem__("dense", calls["dense"] + 1))
    data = tiny_bundle(calibration=300)
    result = _lsq(dense, pruned, data)
    changed = {k for k, v in result.model.state_dict().items() if not torch.equal(v, pruned.state_dict()[k])}
    assert changed == {"conv2.weight"}
    # cost: the dense model runs once over the calibration batches (128 + 128 + 44) ...
    assert calls["dense"] == 3
    # ... and the pruned copy once, with all images as one batch (counted on a fresh copy)
    seen = []
    step = LeastSquaresReconstruction()
    original = step.pruned_pass
    step.pruned_pass = lambda model, fits, x, report: (seen.append(len(x)), original(model, fits, x, report))
    RecoveryPipeline((step,)).recover(dense, pruned, data, seed=0)
    assert seen == [300]


def test_positions_are_distinct_per_image_and_all_of_them_when_few():
    g = torch.Generator().manual_seed(0)
    sampled = sample_positions(5, 64, 16, g)
    assert sampled.shape == (5, 16)
    assert all(len(set(row.tolist())) == 16 for row in sampled)
    assert torch.equal(sample_positions(3, 9, 16, g), torch.arange(9).expand(3, 9))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Conv2d(3, 4, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2)),
        nn.Conv2d(3, 4, 4, padding="same"),  # asymmetric padding
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
    ],
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_sampled_patches_are_the_unfold_columns_and_reproduce_the_conv(conv):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 9, 10, generator=g)
    with torch.no_grad():
        y = conv(x)
        padded = torch.nn.functional.pad(
            x, conv._reversed_padding_repeated_twice,
            mode="constant" if conv.padding_mode == "zeros" else conv.padding_mode,
        )
        columns = torch.nn.functional.unfold(padded, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)
    available = input_positions(conv, x)
    assert available == y.shape[2] * y.shape[3] == columns.shape[2]
    positions = sample_positions(5, available, 7, g)
    rows = input_rows(conv, x, positions)
    assert torch.equal(rows, gather_positions(columns, positions))
    predicted = rows @ conv.weight.detach().reshape(4, -1).T + conv.bias.detach()
    torch.testing.assert_close(predicted, gather_positions(channels_first(conv, y), positions))
