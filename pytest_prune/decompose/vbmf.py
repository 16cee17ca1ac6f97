"""Empirical variational Bayesian matrix factorisation (EVBMF): the rank a noisy matrix supports.

Nakajima, Sugiyama, Babacan, Tomioka (2013), "Global analytic solution of fully-observed variational
Bayesian matrix factorization", JMLR 14:1–37, with the noise variance estimated as in Nakajima et al.
(2015), "Condition for perfect dimensionality recovery by variational Bayesian PCA", JMLR 16.
Kim et al. (ICLR 2016) use it to choose the Tucker-2 ranks of a conv from the unfoldings of its kernel.

Model: V (L × M, L ≤ M; a wider matrix is transposed) = B Aᵀ + E, E Gaussian with variance σ²,
Gaussian priors on A and B whose variances are estimated too (the "empirical" part). With
γ₁ ≥ … ≥ γ_L the singular values of V and α = L / M, the global solution keeps component h iff

    γ_h > γ̲ = σ · sqrt(M · x̲),   x̲ = (1 + τ̲)(1 + α / τ̲),

where τ̲ is the zero of the decreasing function Φ(τ) + Φ(τ / α), Φ(z) = log(z + 1) / z − 1/2
(τ̲ = 2.5129 at α = 1). A kept component is shrunk to

    γ̆_h = γ_h / 2 · (1 − (L + M)σ²/γ_h² + sqrt((1 − (L + M)σ²/γ_h²)² − 4 L M σ⁴ / γ_h⁴)).

The noise variance σ² is the minimiser of the free energy, which up to constants is

    Ω(σ²) = (1/L) Σ_h [ ψ₀(x_h) + 1[x_h > x̲] ψ₁(x_h) ],   x_h = γ_h² / (M σ²),
    ψ₀(x) = x − log x,   ψ₁(x) = log(τ(x) + 1) + α log(τ(x)/α + 1) − τ(x),
    τ(x) = ½ (x − (1 + α) + sqrt((x − (1 + α))² − 4α)),

searched on [σ̲², σ̄²] with σ̄² = Σ_h γ_h² / (L M) (everything is noise) and
σ̲² = max(γ²_{H̄+1} / (M x̲), Σ_{h>H̄} γ_h² / (M (L − H̄))), H̄ = ⌈L / (1 + α)⌉ − 1, the largest
rank the method can return. ψ₁ vanishes at x̲ (that is what defines τ̲), so Ω is continuous; it
is minimised on a logarithmic grid refined by a bounded Brent search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DecompositionError

_GRID_POINTS = 200


@dataclass(frozen=True)
class VBMFDetails:
    """What EVBMF found for one matrix (shape as given, before any transposition)."""

    shape: tuple[int, int]
    rank: int
    noise_variance: float  # σ̂²
    threshold: float  # γ̲: singular values above it are kept
    singular_values: np.ndarray  # γ_1 ≥ … ≥ γ_L
    estimates: np.ndarray  # γ̆_h of the kept components (length rank)


def _phi(z: float) -> float:
    return math.log1p(z) / z - 0.5


def threshold_constants(alpha: float) -> tuple[float, float]:
    """(τ̲, x̲) for the aspect ratio α = L / M ∈ (0, 1]."""
    # Φ(τ) + Φ(τ/α) falls from 1 (τ → 0) to −1 (τ → ∞); its zero lies above √α and well below
    # 10·√α + 10 for every α ∈ (0, 1], so this bracket always holds it.
    low, high = 1e-3 * math.sqrt(alpha), 10.0 * math.sqrt(alpha) + 10.0
    from scipy.optimize import brentq  # here: scipy.optimize takes ~1 s to import, VBMF alone needs it

    tau = brentq(lambda t: _phi(t) + _phi(t / alpha), low, high, xtol=1e-14, rtol=1e-14)
    return tau, (1.0 + tau) * (1.0 + alpha / tau)


def _free_energy(sigma2: float, squares: np.ndarray, m: int, alpha: float, x_low: float) -> float:
    """Ω(σ²) up to constants; ψ₀'s −log γ_h² does not depend on σ² and is left out (γ_h may be 0)."""
    x = squares / (m * sigma2)
    value = float(np.sum(x) + x.size * math.log(sigma2))
    kept = x[x > x_low]
    if kept.size:
        shifted = kept - (1.0 + alpha)
        tau = 0.5 * (shifted + np.sqrt(np.maximum(shifted**2 - 4.0 * alpha, 0.0)))
        value += float(np.sum(np.log1p(tau) + alpha * np.log1p(tau / alpha) - tau))
    return value / x.size


def _noise_variance(squares: np.ndarray, m: int, alpha: float, x_low: float) -> float:
    l = squares.size
    upper = float(squares.sum()) / (l * m)
    h_bar = min(math.ceil(l / (1.0 + alpha)) - 1, l)
    lower = max(float(squares[h_bar]) / (m * x_low), float(squares[h_bar:].sum()) / (m * (l - h_bar)))
    lower = min(lower, upper)
    if upper - lower <= 1e-12 * upper:
        return upper
    grid = np.geomspace(lower, upper, _GRID_POINTS)
    values = [_free_energy(s, squares, m, alpha, x_low) for s in grid]
    best = int(np.argmin(values))
    a, b = math.log(grid[max(best - 1, 0)]), math.log(grid[min(best + 1, _GRID_POINTS - 1)])
    from scipy.optimize import minimize_scalar

    refined = minimize_scalar(
        lambda t: _free_energy(math.exp(t), squares, m, alpha, x_low),
        bounds=(a, b),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return math.exp(refined.x) if refined.fun <= values[best] else float(grid[best])


def evbmf(matrix: torch.Tensor | np.ndarray) -> tuple[int, VBMFDetails]:
    """(rank, details) of the analytic EVBMF solution with unknown noise variance (see module doc).

    A zero matrix, or one with a single row or column, has rank 0 here: there is nothing to tell
    signal from noise with. Callers that need at least one component clamp it themselves.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().to("cpu", torch.float64).numpy()
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise DecompositionError(f"evbmf needs a non-empty 2-D matrix; got shape {values.shape}")
    shape = (int(values.shape[0]), int(values.shape[1]))
    l, m = min(shape), max(shape)
    alpha = l / m
    gamma = np.linalg.svd(values, compute_uv=False)  # descending, length L
    squares = gamma**2
    _tau, x_low = threshold_constants(alpha)
    if l == 1 or not squares.sum() > 0.0:
        noise = float(squares.sum()) / (l * m)
        return 0, VBMFDetails(shape, 0, noise, math.sqrt(m * noise * x_low), gamma, np.empty(0))
    noise = _noise_variance(squares, m, alpha, x_low)
    threshold = math.sqrt(m * noise * x_low)
    kept = gamma[gamma > threshold]
    shrink = 1.0 - (l + m) * noise / kept**2
    estimates = kept / 2.0 * (shrink + np.sqrt(np.maximum(shrink**2 - 4.0 * l * m * noise**2 / kept**4, 0.0)))
    rank = int(kept.size)
    return rank, VBMFDetails(shape, rank, noise, threshold, gamma, estimates)
