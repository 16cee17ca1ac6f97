"""Rank rules: fraction and energy known answers, energy ranks monotone in the energy fraction."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pytest_prune.decompose import DecompositionError, rank_rule, ranks_by_energy, ranks_by_fraction

def conv_with_weight(weight: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


@pytest.mark.parametrize(
    "c_in, c_out, fraction, expected",
    [
        (6, 16, 0.5, (8, 3)),
        (10, 10, 0.3, (3, 3)),  # 0.3 · 10 is 3.0000000000000004 in floating point: still 3
        (10, 10, 0.31, (4, 4)),  # rounded up
        (3, 64, 0.01, (1, 1)),  # at least one channel
        (5, 7, 1.0, (7, 5)),
    ],
)
def test_fraction_of_the_channels(c_in, c_out, fraction, expected):
    assert ranks_by_fraction(nn.Conv2d(c_in, c_out, 3), fraction) == expected


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_fraction_and_energy_outside_zero_one_are_refused(bad):
    conv = nn.Conv2d(4, 4, 3)
    with pytest.raises(DecompositionError, match=r"\(0, 1\]"):
        ranks_by_fraction(conv, bad)
    with pytest.raises(DecompositionError, match=r"\(0, 1\]"):
        ranks_by_energy(conv, bad)


def test_energy_known_answer():
    # Both unfoldings (4 x 3 and 3 x 4) have singular values 4 and 3: energies 16 and 9 of 25.
    weight = torch.zeros(4, 3, 1, 1)
    weight[0, 0, 0, 0], weight[1, 1, 0, 0] = 4.0, 3.0
    conv = conv_with_weight(weight)
    assert ranks_by_energy(conv, 0.64) == (1, 1)
    assert ranks_by_energy(conv, 0.65) == (2, 2)
    assert ranks_by_energy(conv, 1.0) == (2, 2)


@st.composite
def kernels(draw) -> torch.Tensor:
    shape = tuple(draw(st.integers(1, high)) for high in (12, 12, 5, 5))  # C_out, C_in, k_h, k_w
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return torch.randn(shape, generator=generator)


@settings(deadline=None)  # the rest from the active profile
@given(weight=kernels(), energies=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=2))
def test_energy_ranks_grow_with_the_energy_fraction(weight, energies):
    low, high = sorted(energies)
    conv = conv_with_weight(weight)
    ranks_low, ranks_high = ranks_by_energy(conv, low), ranks_by_energy(conv, high)
    assert ranks_low.r_out <= ranks_high.r_out and ranks_low.r_in <= ranks_high.r_in
    full = ranks_by_energy(conv, 1.0)
    weight = weight.double()
    assert full.r_out == torch.linalg.matrix_rank(weight.reshape(weight.shape[0], -1))
    assert full.r_in == torch.linalg.matrix_rank(weight.transpose(0, 1).reshape(weight.shape[1], -1))


def test_rule_names_and_defaults():
    conv = nn.Conv2d(6, 16, 5)
    choose, value = rank_rule("fraction")
    assert value == 0.5 and choose(conv) == (8, 3)
    assert rank_rule("energy", 0.8)[1] == 0.8
    with pytest.raises(DecompositionError, match="known rules: energy, fraction, vbmf"):
        rank_rule("svd")
    choose, _ = rank_rule("vbmf", 0.5)
    with pytest.raises(DecompositionError, match="takes no value"):
        choose(conv)
