"""``lsq``'s residual-aware targets (He et al. 2017, section 4.3): a known answer where only the
corrected target can make the sum exact, the plain fit wherever there is no add or no trace."""

from __future__ import annotations

import torch
from torch import nn

from hand_pruned import hand_groups, hand_prune, randomise_bn, tiny_bundle, tiny_conv_net
from pytest_prune.recovery import RecoveryPipeline
from pytest_prune.recovery.lsq import LeastSquaresReconstruction


class TwoBranches(nn.Module):
    """out = bn(t(c(x))) + b(a(x)), all 1×1 and linear. Pruning ``a`` to 2 of 8 channels leaves
    ``b`` a 2-D view of x, so the shortcut ``b(a(x))`` keeps an error no refit of ``b`` removes;
    ``c`` keeps 4 of 8, which still spans x, so ``t`` can absorb that error, but only if it is
    asked to."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 8, 1, bias=False), nn.Conv2d(8, 4, 1, bias=False)
        self.c, self.t = nn.Conv2d(4, 8, 1, bias=False), nn.Conv2d(8, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        shortcut = self.b(self.a(x))
        return self.bn(self.t(self.c(x))) + shortcut


CHAINS = {("a", "b"): [0, 1], ("c", "t"): [0, 1, 2, 3]}


def _recover(dense, pruned, data, residual, groups=None, plan=None):
    step = LeastSquaresReconstruction(residual=residual)
    return RecoveryPipeline((step,)).recover(dense, pruned, data, seed=0, groups=groups, plan=plan)


def _relative_error(dense: nn.Module, model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        want = dense(x)
        return float((model(x) - want).norm() / want.norm())


def _both(model_class):
    torch.manual_seed(0)
    dense = randomise_bn(model_class()).eval()
    pruned = hand_prune(dense, CHAINS)
    groups, plan = hand_groups(CHAINS, {chain: 8 for chain in CHAINS})
    data = tiny_bundle(shape=(4, 4, 4), calibration=200)
    plain, corrected = (_recover(dense, pruned, data, r, groups, plan) for r in (False, True))
    return dense, plain, corrected


def test_the_last_layer_of_a_branch_absorbs_the_shortcuts_error():
    dense, plain, corrected = _both(TwoBranches)
    x = torch.randn(64, 4, 4, 4, generator=torch.Generator().manual_seed(1))  # not the calibration images

    assert _relative_error(dense, plain.model, x) > 0.1  # b cannot rebuild its output from 2 channels
    assert _relative_error(dense, corrected.model, x) < 5e-3  # t took the rest: the sum is the dense one
    notes = " ".join(corrected.steps[0].notes)
    assert "2 layers end a residual branch" in notes


def test_without_an_add_the_fit_is_the_plain_one_bit_for_bit():
    dense = tiny_conv_net()
    chains = {("conv1", "bn1", "conv2"): [0, 2, 3, 5, 7]}
    pruned = hand_prune(dense, chains)
    data = tiny_bundle()
    plain, corrected = (_recover(dense, pruned, data, residual=r) for r in (False, True))
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), corrected.model.state_dict().items()):
        assert torch.equal(a, b), name


class Untraceable(TwoBranches):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 1.0
        return super().forward(x)


def test_a_model_fx_cannot_trace_keeps_the_plain_targets_and_says_why():
    _, plain, corrected = _both(Untraceable)
    assert torch.equal(plain.model.t.weight, corrected.model.t.weight)
    assert any(n.startswith("residual correction off: torch.fx cannot trace") for n in corrected.steps[0].notes)


class DropoutBeforeTheAdd(TwoBranches):
    """A transformer-style branch end: the BatchNorm's output goes through dropout (eval: identity)."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        shortcut = self.b(self.a(x))
        return self.drop(self.bn(self.t(self.c(x)))) + shortcut


class BroadcastAdd(TwoBranches):
    """The branch ends in an add of a per-channel constant: no other branch's error to absorb."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Parameter(torch.ones(1, 4, 1, 1))

    def forward(self, x):
        return self.bn(self.t(self.c(x))) + self.offset + self.b(self.a(x))


def test_dropout_between_the_branch_end_and_the_add_is_passed_through():
    dense, plain, corrected = _both(DropoutBeforeTheAdd)
    x = torch.randn(64, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    assert _relative_error(dense, corrected.model, x) < 5e-3 < 0.1 < _relative_error(dense, plain.model, x)


def test_a_broadcast_add_keeps_the_plain_target():
    _, plain, corrected = _both(BroadcastAdd)
    # t's add is with a (1, 4, 1, 1) constant: t keeps its plain target; b ends the outer add, whose
    # other operand (t's branch plus the constant) t cannot change, and is corrected for it
    assert torch.equal(plain.model.t.weight, corrected.model.t.weight)
    assert not torch.allclose(plain.model.b.weight, corrected.model.b.weight, atol=1e-4)
