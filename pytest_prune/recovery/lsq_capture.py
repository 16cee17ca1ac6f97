"""What least-squares reconstruction reads from a network: a layer's input rows and outputs at
sampled positions, one dense pass that captures them, and the ridge-regularised normal equations.

Shared by the ``lsq`` recovery step (:mod:`.lsq`, which refits the layers that read pruned
channels) and the ``recon`` criterion (:mod:`pytest_prune.criteria.recon`, which chooses the
channels whose removal the refit can best absorb): both sample output positions the same way, build
the same rows (im2col columns for convolutions, input vectors for linear layers), accumulate the
same ``AᵀA`` and ``AᵀY`` and put the same ridge on them, so the error ``recon`` minimises is the
one ``lsq`` then leaves. See :mod:`.lsq` for the formula and the papers (He et al. 2017, Luo et al.
2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ROW_IMAGES = 256  # images whose rows are built at a time (bounds the float64 row block)


def in_width(module: nn.Module) -> int:
    return module.in_channels if isinstance(module, nn.modules.conv._ConvNd) else module.in_features


def out_width(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else module.out_features


def channels_first(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """(images, channels, positions): a conv's map with pixels flattened, or a linear layer's
    input/output with every leading dimension after the batch as positions (one for plain vectors)."""
    if isinstance(module, nn.Conv2d):
        return t.flatten(2)
    return t.reshape(t.shape[0], -1, t.shape[-1]).transpose(1, 2)


def gather_positions(t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """t[i, :, positions[i]] for every image i of t (images, channels, positions), as
    (images · sampled, channels) rows."""
    index = positions.to(t.device)[:, None, :].expand(-1, t.shape[1], -1)
    return t.gather(2, index).transpose(1, 2).reshape(-1, t.shape[1])


def conv_output_size(module: nn.Conv2d, height: int, width: int) -> tuple[int, int]:
    """Output map size of ``module`` on an input already padded to ``height`` × ``width``."""
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    return (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1


def input_positions(module: nn.Module, x: torch.Tensor) -> int:
    """The output positions per image that ``module`` computes from input ``x``."""
    if isinstance(module, nn.Conv2d):
        left, right, top, bottom = module._reversed_padding_repeated_twice
        return math.prod(conv_output_size(module, x.shape[2] + top + bottom, x.shape[3] + left + right))
    return channels_first(module, x).shape[2]


def input_rows(module: nn.Module, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(images · sampled, D): what ``module`` computes each sampled output position from.

    For a convolution that is the position's im2col column (what ``F.unfold`` gives, in the
    weight's (channel, kernel row, kernel column) order), gathered for the sampled positions only:
    unfolding whole maps to keep 16 of 1,024 columns took three quarters of the step's time.
    """
    if not isinstance(module, nn.Conv2d):
        return gather_positions(channels_first(module, x), positions)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)  # 'same' padding included
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    n, channels, height, width = x.shape
    out_width = conv_output_size(module, height, width)[1]
    positions = positions.to(x.device)
    corner = (positions // out_width) * sh * width + (positions % out_width) * sw  # (n, sampled)
    ki, kj = torch.meshgrid(torch.arange(kh, device=x.device), torch.arange(kw, device=x.device), indexing="ij")
    offsets = (ki * dh * width + kj * dw).reshape(-1)  # (kh · kw,)
    index = (corner[:, :, None] + offsets).reshape(n, -1)  # (n, sampled · kh · kw)
    patches = x.flatten(2).gather(2, index[:, None, :].expand(-1, channels, -1))
    patches = patches.reshape(n, channels, positions.shape[1], kh * kw).transpose(1, 2)
    return patches.reshape(-1, channels * kh * kw)


def sample_positions(images: int, available: int, per_image: int, generator: torch.Generator) -> torch.Tensor:
    """(images, k) positions, k = min(per_image, available), distinct within each image."""
    if available <= per_image:
        return torch.arange(available).expand(images, available)
    return torch.rand(images, available, generator=generator).argsort(dim=1)[:, :per_image]


@dataclass
class NormalEquations:
    """AᵀA and AᵀY of a layer's rows ``A`` (with a column of ones last when the layer has a bias)
    and targets ``Y``, and ‖Y‖² per output, accumulated block by block in float64."""

    gram: torch.Tensor | None = None
    cross: torch.Tensor | None = None
    target_energy: torch.Tensor | None = None  # Σ y² per output
    target_sum: torch.Tensor | None = None  # Σ y per output
    rows: int = 0

    def add(self, a: torch.Tensor, y: torch.Tensor) -> None:
        a, y = a.double(), y.double()
        parts = (a.T @ a, a.T @ y, y.pow(2).sum(0), y.sum(0))
        if self.gram is None:
            self.gram, self.cross, self.target_energy, self.target_sum = parts
        else:
            for name, part in zip(("gram", "cross", "target_energy", "target_sum"), parts):
                getattr(self, name).add_(part)
        self.rows += len(a)

    def add_layer(self, layer: nn.Module, x: torch.Tensor, positions: torch.Tensor, y: torch.Tensor) -> None:
        """Add the rows of ``layer`` on input ``x`` at ``positions`` (one row of ``y`` each)."""
        start = 0
        for i in range(0, len(x), ROW_IMAGES):
            a = input_rows(layer, x[i : i + ROW_IMAGES], positions[i : i + ROW_IMAGES]).double()
            if layer.bias is not None:
                a = torch.cat([a, a.new_ones(len(a), 1)], dim=1)
            self.add(a, y[start : start + len(a)])
            start += len(a)

    def ridge(self, ridge: float, has_bias: bool) -> torch.Tensor | None:
        """The diagonal penalty λ = ``ridge`` · tr(XᵀX)/D on the weight columns (the bias column is
        not penalised); None when the input is zero at every row (nothing to fit)."""
        assert self.gram is not None
        width = self.gram.shape[0] - int(has_bias)
        trace = float(self.gram.diagonal()[:width].sum())
        if trace <= 0.0:
            return None
        penalty = torch.zeros(self.gram.shape[0], dtype=self.gram.dtype, device=self.gram.device)
        penalty[:width] = ridge * trace / width
        return penalty


def squared_error(theta: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor, target_energy: torch.Tensor) -> float:
    """‖Aθ − Y‖² from AᵀA, AᵀY and ‖Y‖² (clamped at 0 against rounding)."""
    value = (theta * (gram @ theta)).sum() - 2 * (theta * cross).sum() + target_energy
    return max(float(value), 0.0)


@dataclass
class SampledLayer:
    """One layer whose dense outputs (and, with ``normal``, dense input rows) a capture collects."""

    name: str
    dense: nn.Module
    kept_outputs: torch.Tensor | None = None  # dense output channels kept as targets; None: all
    positions: torch.Tensor | None = None  # (images, sampled) output positions, drawn at first call
    available: int = 0  # output positions per image
    targets: list[torch.Tensor] = field(default_factory=list)  # dense outputs at the positions
    normal: NormalEquations | None = None  # set: accumulate the dense rows against the targets
    calls: int = 0
    captured: int = 0  # calls whose output had the positions of the first


class DenseSampling:
    """The hooks one capture puts on the dense modules of ``layers`` during a pass: each layer's
    output at its sampled positions (drawn at its first call, in forward order, from
    ``generator``: a seed gives the same positions), kept in ``targets``, or, for a layer with
    ``normal`` set, accumulated with its dense input rows into the normal equations instead (no
    targets kept: rows and targets are consumed batch by batch).

    It reads the first ``images`` images of the pass and ignores the rest, so two captures of
    different sizes can share one pass (``recon``'s 512 images and ``lsq``'s 1,024:
    :func:`run_dense`). ``batches`` counts the batches it read; a layer called other than once
    per such batch is left with ``calls`` saying so, for the caller to drop."""

    def __init__(self, layers: Sequence[SampledLayer], images: int, per_image: int, generator: torch.Generator):
        self.layers, self.images, self.per_image, self.generator = list(layers), images, per_image, generator
        self.offset = 0  # images of the pass before the current batch
        self.batches = 0

    def keep(self, layer: SampledLayer, args: tuple, output: torch.Tensor) -> None:
        if self.offset >= self.images:
            return
        layer.calls += 1
        output = channels_first(layer.dense, output)
        if layer.positions is None:
            layer.available = output.shape[2]
            layer.positions = sample_positions(self.images, layer.available, self.per_image, self.generator)
        if output.shape[2] != layer.available:
            return  # the caller drops a layer that did not give one target per batch
        layer.captured += 1
        take = min(len(output), self.images - self.offset)  # a batch across the limit: its first images
        positions = layer.positions[self.offset : self.offset + take]
        target = gather_positions(output[:take], positions)
        if layer.kept_outputs is not None:
            target = target[:, layer.kept_outputs]
        if layer.normal is None:
            layer.targets.append(target.float())
        else:
            layer.normal.add_layer(layer.dense, args[0][:take], positions, target)

    def install(self) -> list:
        return [s.dense.register_forward_hook(lambda m, a, o, s=s: self.keep(s, a, o)) for s in self.layers]

    def advance(self, images: int) -> None:
        if self.offset < self.images:
            self.batches += 1
        self.offset += images


def run_dense(
    dense: Callable[[torch.Tensor], torch.Tensor], samplings: Sequence[DenseSampling], batches: Sequence[torch.Tensor]
) -> None:
    """One forward pass of ``dense`` over ``batches`` with every sampling's hooks on."""
    hooks = [hook for sampling in samplings for hook in sampling.install()]
    try:
        for x in batches:
            dense(x)
            for sampling in samplings:
                sampling.advance(len(x))
    finally:
        for hook in hooks:
            hook.remove()


def capture_dense(
    dense: Callable[[torch.Tensor], torch.Tensor],
    layers: Sequence[SampledLayer],
    batches: Sequence[torch.Tensor],
    per_image: int,
    generator: torch.Generator,
) -> None:
    """One forward pass of ``dense`` over ``batches`` that captures ``layers`` (:class:`DenseSampling`)."""
    images = sum(len(x) for x in batches)
    run_dense(dense, [DenseSampling(layers, images, per_image, generator)], batches)
