"""``lsq``: layer-wise least-squares reconstruction of the layers that read pruned channels.

When channels are removed, the layer that consumed them loses part of its input; its remaining
weights can be refit so that, on real data, it still produces what the dense layer produced.
This is the reconstruction step of He, Zhang, Sun, "Channel Pruning for Accelerating Very Deep
Neural Networks", ICCV 2017 (section 3.1, the least-squares update of W), and of Luo, Wu, Lin,
"ThiNet", ICCV 2017 (section 3.3), here with a small ridge term and a refit bias.

Which layers: every ``Conv2d`` or ``Linear`` of the pruned model whose input width
(``in_channels`` / ``in_features``) is smaller than that of the dense module of the same qualified
name. Grouped convolutions, other convolution types and layers called more than once per forward
are left alone, each with its reason in the step's report. A layer whose *output* channels were
pruned too is fit to the dense outputs that survive, which needs the caller's groups and plan.

The fit, for one layer: rows ``x`` are the layer's input patches (the im2col columns ``F.unfold``
would give, gathered at the sampled positions only, for convolutions; the input vector for linear
layers) *in the pruned network* — with every earlier
layer already refit, so that errors of earlier layers are corrected rather than compounded — and
targets ``y`` are the *dense* layer's outputs at the same places on the same images. With ``A`` the
rows (plus a column of ones when the layer has a bias) and ``Y`` the targets,

    θ = argmin ‖Aθ − Y‖² + λ‖W‖²,   λ = ridge · tr(XᵀX) / D,

solved in float64 from the normal equations (the bias is not penalised; ``D`` is the number of
weight inputs, so λ is ``ridge`` times the mean eigenvalue of XᵀX). Spatial positions are sampled,
``positions`` per image without replacement (all of them if the map is smaller), from a generator
seeded with the run's seed, so the same seed gives bitwise the same weights.

Cost, and why it is linear in depth. Layer k's rows depend on the refit weights of layers before
it, and each refit needs all calibration images, so a layer-by-layer loop that re-runs the pruned
network up to layer k for every k costs O(depth²) layer evaluations. Instead:

1. one dense forward pass over the calibration images, in batches, whose hooks keep each refit
   layer's outputs at the sampled positions (``images × positions × outputs`` floats per layer);
2. one pruned forward pass with *all* calibration images as a single batch, without gradients:
   a pre-forward hook on each refit layer receives that layer's complete input, fits the layer and
   writes its new weights before the layer runs, so every later layer sees the corrected input.

That is two forward passes plus one fit per layer (``images × positions`` rows of width ``D``:
O(images · positions · D²) to accumulate, O(D³) to solve). The price is memory: pass 2 holds the
pruned network's inference activations for every calibration image at once (about 64 MB per
16×32×32 feature map at 1,024 CIFAR images), so large models want fewer images (``lsq:256``).
Measured on one CPU thread, 1,024 CIFAR images, inner channels halved: 5.0 / 7.5 / 11.0 / 12.1 s
for ResNet-20 / 32 / 44 / 56 (9 / 15 / 21 / 27 layers refit), about 1.2-1.4 times one dense
forward pass over the same images; peak memory about 0.5 GB above the models and data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import is_conv_or_linear
from ..modes import modes_kept
from .base import RecoveryContext, RecoveryStep, StepReport, calibration_inputs
from .registry import register

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


def removed_outputs(ctx: RecoveryContext) -> dict[str, set[int]] | None:
    """Module name → indices of its dense output channels that surgery removed (None: unknown)."""
    if ctx.groups is None or ctx.plan is None:
        return None
    by_name = {g.name: g for g in ctx.groups}
    removed: dict[str, set[int]] = {}
    for group_name, positions in ctx.plan.remove.items():
        for member in by_name[group_name].producers():
            removed.setdefault(member.module, set()).update(i for p in positions for i in member.indices[p])
    return removed


@dataclass
class LayerFit:
    """One layer to refit and what the two passes collect for it."""

    name: str
    dense: nn.Module
    pruned: nn.Module
    kept_outputs: torch.Tensor | None  # dense output channels that survive; None: all of them
    positions: torch.Tensor | None = None  # (images, sampled) output positions, drawn at first call
    available: int = 0  # output positions per image
    targets: list[torch.Tensor] = field(default_factory=list)  # dense outputs at the positions
    calls: int = 0
    reached: bool = False  # the pruned pass got to it
    fitted: bool = False


def squared_error(theta: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor, target_energy: torch.Tensor) -> float:
    """‖Aθ − Y‖² from AᵀA, AᵀY and ‖Y‖² (clamped at 0 against rounding)."""
    value = (theta * (gram @ theta)).sum() - 2 * (theta * cross).sum() + target_energy
    return max(float(value), 0.0)


@register
class LeastSquaresReconstruction(RecoveryStep):
    """W, b ← argmin Σ‖W·x_pruned + b − y_dense‖² + λ‖W‖² for every layer that reads pruned channels.

    Defaults: the first 1,024 calibration images (``lsq:N`` for another count), 16 sampled output
    positions per image, ridge 1e-4 (λ = 1e-4 · tr(XᵀX)/D). He et al. 2017; Luo et al. 2017.
    """

    name = "lsq"
    summary = "refit layers that read pruned channels to the dense outputs (least squares)"
    cost = "one dense and one pruned forward pass over the calibration images, one solve per layer"
    argument = "images"
    argument_example = 512

    DEFAULT_IMAGES = 1024
    DENSE_BATCH = 128

    def __init__(self, images: int | None = None, *, positions: int = 16, ridge: float = 1e-4):
        self.images = images or self.DEFAULT_IMAGES
        self.positions = positions
        self.ridge = ridge

    @property
    def spec(self) -> str:
        return self.name if self.images == self.DEFAULT_IMAGES else f"{self.name}:{self.images}"

    # -- which layers ---------------------------------------------------------------------------
    def layers_to_fit(self, ctx: RecoveryContext, report: StepReport) -> list[LayerFit]:
        dense_modules = dict(ctx.dense.named_modules())
        removed = removed_outputs(ctx)
        fits = []
        for name, module in ctx.model.named_modules():
            if not is_conv_or_linear(module):
                continue
            dense = dense_modules.get(name)
            if dense is None or type(dense) is not type(module):
                report.skipped[name] = "the dense model has no layer of the same name and type"
                continue
            if in_width(module) >= in_width(dense):
                continue  # its input was not pruned
            kept, reason = None, self.unsupported(module)
            if reason is None and out_width(module) != out_width(dense):
                kept, reason = self.surviving_outputs(name, module, dense, removed)
            if reason is not None:
                report.skipped[name] = reason
            else:
                fits.append(LayerFit(name, dense, module, kept.to(ctx.device) if kept is not None else None))
        return fits

    @staticmethod
    def surviving_outputs(
        name: str, module: nn.Module, dense: nn.Module, removed: dict[str, set[int]] | None
    ) -> tuple[torch.Tensor | None, str | None]:
        """The dense output channels a layer with pruned outputs still has, or why they are unknown."""
        if removed is None:
            return None, (
                "its output channels were pruned too, and no groups and plan were given to say "
                "which dense outputs remain (pass groups= and plan= to recover)"
            )
        kept = [i for i in range(out_width(dense)) if i not in removed.get(name, set())]
        if len(kept) != out_width(module):
            return None, (
                f"the plan leaves {len(kept)} of its {out_width(dense)} dense outputs but it has "
                f"{out_width(module)}: groups and plan do not match this model"
            )
        return torch.as_tensor(kept, dtype=torch.long), None

    @staticmethod
    def unsupported(module: nn.Module) -> str | None:
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            return f"only Conv2d and Linear layers are refit, this is {type(module).__name__}"
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            return (
                f"grouped convolution (groups={module.groups}): each output sees only its own "
                "group of inputs, which one least-squares fit over all inputs does not respect"
            )
        return None

    # -- the two passes -------------------------------------------------------------------------
    def apply(self, ctx: RecoveryContext) -> StepReport:
        report = StepReport(self.spec)
        fits = self.layers_to_fit(ctx, report)
        if not fits:
            report.notes.append("no Conv2d or Linear layer reads pruned channels: nothing to refit")
            return report
        batches = calibration_inputs(ctx, self.images, self.DENSE_BATCH, self.spec)
        images = sum(len(x) for x in batches)
        generator = torch.Generator().manual_seed(ctx.seed)

        with modes_kept(ctx.dense, ctx.model), torch.no_grad():
            ctx.dense.eval()
            self.dense_pass(ctx.dense, fits, batches, images, generator)
            fits = self.check_calls(fits, len(batches), report)
            ctx.model.eval()
            self.pruned_pass(ctx.model, fits, torch.cat(batches), report)

        refit = [f for f in fits if f.fitted]
        for f in fits:
            if not f.reached:
                report.skipped[f.name] = "the pruned model never calls it in its forward pass"
        report.notes.append(
            f"{len(refit)} layers refit in forward order on {images} calibration images × "
            f"≤{self.positions} positions, ridge {self.ridge:g} · tr(XᵀX)/D"
        )
        return report

    def dense_pass(
        self,
        dense: nn.Module,
        fits: list[LayerFit],
        batches: list[torch.Tensor],
        images: int,
        generator: torch.Generator,
    ) -> None:
        """Keep every refit layer's dense output at its sampled positions, batch by batch."""
        offset = 0

        def keep_target(fit: LayerFit, _module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            fit.calls += 1
            output = channels_first(fit.dense, output)
            if fit.positions is None:  # drawn in forward order: deterministic under the seed
                fit.available = output.shape[2]
                fit.positions = sample_positions(images, fit.available, self.positions, generator)
            if output.shape[2] != fit.available:
                return  # check_calls drops a layer that did not give one target per batch
            target = gather_positions(output, fit.positions[offset : offset + len(output)])
            if fit.kept_outputs is not None:
                target = target[:, fit.kept_outputs]
            fit.targets.append(target.float())

        hooks = [f.dense.register_forward_hook(lambda m, a, o, f=f: keep_target(f, m, a, o)) for f in fits]
        try:
            for x in batches:
                dense(x)
                offset += len(x)
        finally:
            for hook in hooks:
                hook.remove()

    @staticmethod
    def check_calls(fits: list[LayerFit], batches: int, report: StepReport) -> list[LayerFit]:
        kept = []
        for f in fits:
            if f.calls == batches and len(f.targets) == batches:
                kept.append(f)
            elif f.calls == 0:
                report.skipped[f.name] = "the dense model never calls it in its forward pass"
            else:
                report.skipped[f.name] = (
                    f"called {f.calls} times over {batches} batches (shared weights): one set of "
                    "weights cannot be fit to several places in the network"
                )
        return kept

    def pruned_pass(self, model: nn.Module, fits: list[LayerFit], x: torch.Tensor, report: StepReport) -> None:
        """One forward of all images; each layer is refit just before it runs."""

        def refit(fit: LayerFit, _module: nn.Module, args: tuple) -> None:
            if fit.reached:
                return
            fit.reached = True
            reason = self.fit(fit, args[0], report)
            if reason is None:
                fit.fitted = True
            else:
                report.skipped[fit.name] = reason

        hooks = [f.pruned.register_forward_pre_hook(lambda m, a, f=f: refit(f, m, a)) for f in fits]
        try:
            model(x)
        finally:
            for hook in hooks:
                hook.remove()

    # -- one layer ------------------------------------------------------------------------------
    def fit(self, fit: LayerFit, x: torch.Tensor, report: StepReport) -> str | None:
        """Solve for the layer's weight (and bias) and write them; a reason if it cannot."""
        layer = fit.pruned
        assert fit.positions is not None
        has_bias = layer.bias is not None
        y = torch.cat(fit.targets).double()
        fit.targets.clear()
        gram = cross = None
        start = 0
        if input_positions(layer, x) != fit.available:
            return (
                f"its input gives {input_positions(layer, x)} positions per image but the dense output "
                f"has {fit.available}: the pruned layer does not line up with the dense one"
            )
        for i in range(0, len(x), ROW_IMAGES):
            a = input_rows(layer, x[i : i + ROW_IMAGES], fit.positions[i : i + ROW_IMAGES]).double()
            if has_bias:
                a = torch.cat([a, a.new_ones(len(a), 1)], dim=1)
            block = y[start : start + len(a)]
            start += len(a)
            gram = a.T @ a if gram is None else gram + a.T @ a
            cross = a.T @ block if cross is None else cross + a.T @ block
        assert gram is not None and cross is not None
        width = gram.shape[0] - int(has_bias)
        trace = float(gram.diagonal()[:width].sum())
        if trace <= 0.0:
            return "its input is zero at every sampled position: there is nothing to fit"
        penalty = torch.zeros(gram.shape[0], dtype=gram.dtype, device=gram.device)
        penalty[:width] = self.ridge * trace / width
        theta = torch.linalg.solve(gram + torch.diag(penalty), cross)

        weight = layer.weight
        old = weight.detach().reshape(weight.shape[0], -1).T.double()
        if has_bias:
            old = torch.cat([old, layer.bias.detach().double()[None, :]])
        energy = y.pow(2).sum()
        before, after = squared_error(old, gram, cross, energy), squared_error(theta, gram, cross, energy)
        weight.copy_(theta[:width].T.reshape(weight.shape).to(weight.dtype))
        if has_bias:
            layer.bias.copy_(theta[width].to(layer.bias.dtype))
        scale = max(float(energy), 1e-300)
        report.notes.append(
            f"{fit.name}: {len(y)} rows × {width} inputs; relative error {before / scale:.4g} → {after / scale:.4g}"
        )
        return None
