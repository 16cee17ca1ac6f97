"""EVBMF known answers: the rank of a low-rank matrix under Gaussian noise, and the paper's constants."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from pytest_prune.decompose import DecompositionError, evbmf, ranks_by_vbmf
from pytest_prune.decompose.vbmf import threshold_constants


def low_rank_plus_noise(rows: int, cols: int, rank: int, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))
    return signal + sigma * rng.standard_normal((rows, cols))


@pytest.mark.parametrize("shape", [(100, 80), (80, 100)])
@pytest.mark.parametrize("sigma", [0.05, 0.5])
def test_rank_five_plus_noise_gives_rank_five_and_the_noise_variance(shape, sigma):
    matrix = low_rank_plus_noise(*shape, rank=5, sigma=sigma, seed=0)
    rank, details = evbmf(matrix)
    assert rank == 5
    assert details.shape == shape
    assert details.noise_variance == pytest.approx(sigma**2, rel=0.1)
    # The five signal singular values lie above the threshold, the noise ones below it.
    assert details.singular_values[4] > details.threshold > details.singular_values[5]
    # Kept components are shrunk towards zero, never flipped or grown.
    assert np.all((details.estimates > 0) & (details.estimates < details.singular_values[:5]))


def test_pure_noise_has_rank_zero():
    rank, details = evbmf(np.random.default_rng(1).standard_normal((100, 80)))
    assert rank == 0
    assert details.noise_variance == pytest.approx(1.0, rel=0.1)


def test_accepts_a_torch_tensor_and_degenerate_matrices():
    assert evbmf(torch.from_numpy(low_rank_plus_noise(40, 30, 3, 0.01, seed=2)))[0] == 3
    assert evbmf(np.zeros((5, 7)))[0] == 0
    assert evbmf(np.ones((1, 7)))[0] == 0  # a single row: nothing to tell signal from noise with
    with pytest.raises(DecompositionError, match="2-D"):
        evbmf(np.ones(4))


def test_threshold_constant_of_the_paper():
    # Nakajima et al. 2013: τ̲ = 2.5129 for square matrices; Φ(τ̲) + Φ(τ̲/α) = 0 for every α.
    tau, x_low = threshold_constants(1.0)
    assert tau == pytest.approx(2.5129, abs=1e-4)
    assert x_low == pytest.approx((1 + tau) ** 2 / tau)
    for alpha in (0.1, 0.5, 0.9):
        tau, x_low = threshold_constants(alpha)
        phi = lambda z: math.log1p(z) / z - 0.5  # noqa: E731
        assert phi(tau) + phi(tau / alpha) == pytest.approx(0.0, abs=1e-10)
        # Above the Marchenko–Pastur edge (1 + √α)², which pure noise reaches.
        assert x_low > (1 + math.sqrt(alpha)) ** 2


def test_conv_ranks_are_the_multilinear_ranks_of_a_noisy_low_rank_kernel():
    generator = torch.Generator().manual_seed(0)
    core = torch.randn((3, 2, 3, 3), generator=generator)
    a, b = torch.randn((24, 3), generator=generator), torch.randn((20, 2), generator=generator)
    conv = nn.Conv2d(20, 24, 3)
    with torch.no_grad():
        weight = torch.einsum("oirs,Oo,Ii->OIrs", core, a, b)
        conv.weight.copy_(weight + 0.01 * torch.randn(weight.shape, generator=generator))
    assert ranks_by_vbmf(conv) == (3, 2)


def test_conv_ranks_are_at_least_one():
    conv = nn.Conv2d(8, 8, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0)))
    assert ranks_by_vbmf(conv) == (1, 1)  # pure noise: EVBMF says 0, a conv needs one channel
