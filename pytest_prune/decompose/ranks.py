"""Tucker-2 ranks (R_out, R_in) of a conv, by rule: a fraction, an energy fraction, or VBMF.

Each rule looks at the kernel W (C_out × C_in × k_h × k_w) through its two channel unfoldings,
W₍₀₎ (C_out × C_in·k_h·k_w) and W₍₁₎ (C_in × C_out·k_h·k_w), and returns ranks between 1 and the
channel count of each mode. Rules are registered by name in :data:`RANK_RULES`, which is what
``decompose_model(ranks=...)`` looks names up in.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .errors import DecompositionError
from .tucker import Tucker2Ranks, check_decomposable
from .vbmf import evbmf

# Rounding slack: 0.3 * 10 is 3.0000000000000004 in floating point, which is 3 channels, not 4.
_EPS = 1e-9


def channel_unfoldings(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W₍₀₎, W₍₁₎): the kernel unfolded along its output- and its input-channel mode, in float64."""
    w = weight.detach().to(torch.float64)
    return w.reshape(w.shape[0], -1), w.transpose(0, 1).reshape(w.shape[1], -1)


def _clamp(rank: int, channels: int) -> int:
    return max(1, min(int(rank), channels))


def ranks_by_fraction(conv: nn.Conv2d, fraction: float) -> Tucker2Ranks:
    """R = ⌈fraction · C⌉ for each channel mode, at least 1; ``fraction`` in (0, 1]."""
    check_decomposable(conv)
    if not 0.0 < fraction <= 1.0:
        raise DecompositionError(f"rank fraction must lie in (0, 1]; got {fraction!r}")
    return Tucker2Ranks(
        _clamp(math.ceil(fraction * conv.out_channels - _EPS), conv.out_channels),
        _clamp(math.ceil(fraction * conv.in_channels - _EPS), conv.in_channels),
    )


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with Σ_{h≤r} s_h² ≥ energy · Σ_h s_h² (singular values in descending order)."""
    squares = singular_values.to(torch.float64) ** 2
    total = float(squares.sum())
    if total == 0.0:
        return 1
    kept = torch.cumsum(squares, 0) / total
    return int(torch.count_nonzero(kept < energy - _EPS)) + 1


def ranks_by_energy(conv: nn.Conv2d, energy: float) -> Tucker2Ranks:
    """Smallest ranks whose unfolding singular values keep ``energy`` of the squared energy.

    For mode m, R_m = min{r : Σ_{h≤r} s_h(W₍ₘ₎)² ≥ energy · ‖W‖²}; ``energy`` in (0, 1]. Each R_m is
    monotone in ``energy``, and at 1 it is the rank of the unfolding.
    """
    check_decomposable(conv)
    if not 0.0 < energy <= 1.0:
        raise DecompositionError(f"energy fraction must lie in (0, 1]; got {energy!r}")
    out_unfolding, in_unfolding = channel_unfoldings(conv.weight)
    return Tucker2Ranks(
        _clamp(energy_rank(torch.linalg.svdvals(out_unfolding), energy), conv.out_channels),
        _clamp(energy_rank(torch.linalg.svdvals(in_unfolding), energy), conv.in_channels),
    )


def ranks_by_vbmf(conv: nn.Conv2d) -> Tucker2Ranks:
    """EVBMF rank of each channel unfolding (Kim et al. 2016; :func:`~.vbmf.evbmf`), at least 1."""
    check_decomposable(conv)
    out_unfolding, in_unfolding = channel_unfoldings(conv.weight)
    return Tucker2Ranks(
        _clamp(evbmf(out_unfolding)[0], conv.out_channels),
        _clamp(evbmf(in_unfolding)[0], conv.in_channels),
    )


def _vbmf_rule(conv: nn.Conv2d, value: float | None) -> Tucker2Ranks:
    if value is not None:
        raise DecompositionError(f"rank rule 'vbmf' takes no value; got value={value!r}; leave it out")
    return ranks_by_vbmf(conv)


RankRule = Callable[[nn.Conv2d, "float | None"], Tucker2Ranks]

# name → (rule, default value). The defaults are what decompose_model uses when no value is given.
RANK_RULES: dict[str, tuple[RankRule, float | None]] = {
    "fraction": (ranks_by_fraction, 0.5),
    "energy": (ranks_by_energy, 0.9),
    "vbmf": (_vbmf_rule, None),
}


def rank_rule(
    name: str, value: float | None = None
) -> tuple[Callable[[nn.Conv2d], Tucker2Ranks], float | None]:
    """The rule registered as ``name`` bound to ``value`` (or its default), and the value used."""
    if name not in RANK_RULES:
        raise DecompositionError(
            f"unknown rank rule {name!r}; known rules: {', '.join(sorted(RANK_RULES))}"
        )
    rule, default = RANK_RULES[name]
    used = default if value is None else value
    return (lambda conv: rule(conv, used)), used
