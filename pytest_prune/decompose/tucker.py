"""Tucker-2 decomposition of one conv into three cascaded convs (Kim et al., ICLR 2016).

A conv kernel W of shape (C_out, C_in, k_h, k_w) is decomposed on its two channel modes only
(mode 0: output channels, mode 1: input channels), the spatial modes are left whole:

    W ≈ G ×₀ U_out ×₁ U_in,    G: (R_out, R_in, k_h, k_w),  U_out: (C_out, R_out),  U_in: (C_in, R_in)

so that, because convolution is linear in the kernel and a 1x1 conv is a per-pixel matrix,

    conv(x, W) + b = conv₁ₓ₁( conv_k×k( conv₁ₓ₁(x, U_inᵀ), G ), U_out ) + b

which is the cascade built here:

1. 1x1 conv C_in → R_in, weight U_inᵀ, no bias (stride 1, no padding: it runs on the input grid);
2. k×k conv R_in → R_out, weight G, no bias, with the original stride, padding, dilation and
   padding mode (a per-pixel linear map without bias commutes with every padding mode);
3. 1x1 conv R_out → C_out, weight U_out, carrying the original bias.

tensorly's ``partial_tucker`` (higher-order orthogonal iteration, SVD initialisation, fixed random
state for the columns it must pad) computes G and the factors, in float64 with the PyTorch
backend, selected for this thread only and restored afterwards. At full rank
(R_out, R_in) = (C_out, C_in) the factors are square orthogonal matrices and the cascade
reproduces the conv up to rounding.

Parameters of the cascade: C_in·R_in + R_in·R_out·k_h·k_w + R_out·C_out (+ C_out with a bias).
MACs per sample: H_in·W_in·C_in·R_in + H_out·W_out·(R_in·R_out·k_h·k_w + R_out·C_out); note that the
first 1x1 conv runs on the *input* grid, so a strided conv pays for it on every input position.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import torch
from torch import nn

from .errors import DecompositionError

# partial_tucker pads a factor with random orthonormal columns when a rank exceeds the rank of
# the unfolding; a fixed state keeps the result the same on every run.
_RANDOM_STATE = 0


class Tucker2Ranks(NamedTuple):
    """Ranks of the two channel modes, in the kernel's mode order: (R_out, R_in)."""

    r_out: int
    r_in: int


def check_decomposable(conv: nn.Module) -> nn.Conv2d:
    """Return ``conv`` if Tucker-2 applies to it (an ``nn.Conv2d`` with ``groups == 1``), else raise."""
    if not isinstance(conv, nn.Conv2d):
        raise DecompositionError(
            f"Tucker-2 decomposes nn.Conv2d layers; got {type(conv).__name__}; pass a 2-D conv"
        )
    if conv.groups != 1:
        raise DecompositionError(
            f"Tucker-2 on the channel modes needs groups == 1; this conv has groups={conv.groups} "
            "(grouped or depthwise); leave it out (decompose_model skips such layers)"
        )
    return conv


def check_ranks(conv: nn.Conv2d, ranks: tuple[int, int]) -> Tucker2Ranks:
    """``ranks`` as :class:`Tucker2Ranks`, each between 1 and its channel count, else raise."""
    try:
        r_out, r_in = (int(r) for r in ranks)
    except (TypeError, ValueError):
        raise DecompositionError(f"ranks must be two integers (R_out, R_in); got {ranks!r}") from None
    if not (1 <= r_out <= conv.out_channels and 1 <= r_in <= conv.in_channels):
        raise DecompositionError(
            f"ranks (R_out, R_in) = ({r_out}, {r_in}) do not fit a conv with C_out={conv.out_channels}, "
            f"C_in={conv.in_channels}; choose 1 <= R_out <= C_out and 1 <= R_in <= C_in"
        )
    return Tucker2Ranks(r_out, r_in)


def tucker2_cascade(
    conv: nn.Conv2d, ranks: tuple[int, int], device: torch.device | str | None = None
) -> nn.Sequential:
    """The three convs of the decomposition with their shapes but *uninitialised* weights.

    Built on ``device`` (default: the meta device, which allocates nothing and draws no random
    numbers), so that parameters and MACs of a candidate can be counted before any decomposition.
    """
    check_decomposable(conv)
    r_out, r_in = check_ranks(conv, ranks)
    # Layers are created on the meta device so that their default init never touches the global RNG.
    options = {"device": "meta", "dtype": conv.weight.dtype}
    cascade = nn.Sequential(
        nn.Conv2d(conv.in_channels, r_in, 1, bias=False, **options),
        nn.Conv2d(
            r_in,
            r_out,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            padding_mode=conv.padding_mode,
            bias=False,
            **options,
        ),
        nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None, **options),
    )
    if device is not None and torch.device(device).type != "meta":
        cascade = cascade.to_empty(device=device)
    return cascade.train(conv.training)


@contextmanager
def _pytorch_backend() -> Iterator[None]:
    """Run tensorly on the PyTorch backend in this thread only, restoring the previous one after."""
    import tensorly  # here, not at the top: with scipy it takes 1-2 s, and only Tucker needs it

    previous = tensorly.get_backend()
    tensorly.set_backend("pytorch", local_threadsafe=True)
    try:
        yield
    finally:
        tensorly.set_backend(previous, local_threadsafe=True)


def tucker2_factors(
    weight: torch.Tensor, ranks: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(G, U_out, U_in) of the Tucker-2 decomposition of a 4-D kernel, in float64."""
    from tensorly.decomposition import partial_tucker

    with _pytorch_backend(), warnings.catch_warnings():
        # A rank above the rank of an unfolding is expected (full rank of a conv with C_out > C_in·k²):
        # tensorly warns, then pads the factor with orthonormal columns, which is what we want.
        warnings.filterwarnings(
            "ignore", message="Trying to compute SVD with n_eigenvecs", category=UserWarning
        )
        (core, (u_out, u_in)), _errors = partial_tucker(
            weight.detach().to(torch.float64),
            rank=list(ranks),
            modes=[0, 1],
            init="svd",
            random_state=_RANDOM_STATE,
        )
    return core, u_out, u_in


@torch.no_grad()
def decompose_conv(conv: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """Replace ``conv`` by 1x1 (C_in→R_in) → k×k (R_in→R_out) → 1x1 (R_out→C_out), see the module doc.

    ``ranks`` is (R_out, R_in). Deterministic: the same conv and ranks give the same weights.
    The new convs live on the conv's device and dtype and take over its training mode.
    """
    check_decomposable(conv)
    ranks = check_ranks(conv, ranks)
    weight = conv.weight
    core, u_out, u_in = tucker2_factors(weight, ranks)
    cascade = tucker2_cascade(conv, ranks, device=weight.device)
    first, middle, last = cascade
    first.weight.copy_(u_in.T.reshape(ranks.r_in, conv.in_channels, 1, 1))
    middle.weight.copy_(core)
    last.weight.copy_(u_out.reshape(conv.out_channels, ranks.r_out, 1, 1))
    if conv.bias is not None:
        last.bias.copy_(conv.bias)
    return cascade
