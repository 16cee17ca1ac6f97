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

A layer that ends a residual branch (its output, through an eval-mode BatchNorm or directly, is
one operand of an add) is fit to its dense output *plus* the other operand's error, so that the
sum, not the branch, matches the dense network (He et al. 2017, section 4.3; :mod:`.lsq_residual`,
on by default, ``residual=False`` for the plain targets). The pruned pass then runs on a
``torch.fx`` trace; a model fx cannot trace keeps the plain targets, with the reason in the report.

The rows, the sampling, the dense capture and the normal equations live in :mod:`.lsq_capture`,
shared with the ``recon`` criterion (which chooses the channels this fit absorbs best) and the
sensitivity analysis's refit, so all three fit exactly the same problem.

Cost, and why it is linear in depth. Layer k's rows depend on the refit weights of layers before
it, and each refit needs all calibration images, so a layer-by-layer loop that re-runs the pruned
network up to layer k for every k costs O(depth²) layer evaluations. Instead:

1. one dense forward pass over the calibration images, in batches, whose hooks keep each refit
   layer's outputs at the sampled positions (``images × positions × outputs`` floats per layer);
2. one pruned forward pass with *all* calibration images as a single batch, without gradients:
   a pre-forward hook on each refit layer receives that layer's complete input, fits the layer and
   writes its new weights before the layer runs, so every later layer sees the corrected input.

Pass 1 captures every layer any plan over the run's groups can refit, not only this plan's
(:mod:`.lsq_dense`: the positions are drawn in forward order over those, so they do not depend on
which groups the plan spares), and is skipped where an earlier ``lsq`` of the run took it on the
same dense model and images, or ``recon``'s scoring pass did (:mod:`.lsq_shared`): the capture is
kept at full width (:mod:`.lsq_cache`), which gives the same weights bit for bit.

That is two forward passes plus one fit per layer (``images × positions`` rows of width ``D``:
O(images · positions · D²) to accumulate, O(D³) to solve). The price is memory: pass 2 holds the
pruned network's inference activations for every calibration image at once (about 64 MB per
16×32×32 feature map at 1,024 CIFAR images), so large models want fewer images (``lsq:256``).
Measured on one CPU thread, 1,024 CIFAR images, inner channels halved: 5.0 / 7.5 / 11.0 / 12.1 s
for ResNet-20 / 32 / 44 / 56 (9 / 15 / 21 / 27 layers refit), about 1.2-1.4 times one dense
forward pass over the same images; peak memory about 0.5 GB above the models and data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..groups import is_conv_or_linear
from ..modes import modes_kept
from .base import RecoveryContext, RecoveryStep, StepReport, calibration_inputs
from .lsq_capture import (  # noqa: F401  (the rows, positions and widths are re-exported: lsq's API)
    ROW_IMAGES,
    NormalEquations,
    SampledLayer,
    capture_dense,
    channels_first,
    conv_output_size,
    gather_positions,
    in_width,
    input_positions,
    input_rows,
    out_width,
    sample_positions,
    squared_error,
)
from . import lsq_cache, lsq_dense
from .lsq_dense import why_not_refit
from .lsq_residual import PrunedTailRefit, Tail, find_tails, trace
from .registry import register


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
class LayerFit(SampledLayer):
    """One layer to refit: what the dense capture collects for it (:class:`SampledLayer`), its
    pruned counterpart, and how far the pruned pass got."""

    pruned: nn.Module | None = None
    reached: bool = False  # the pruned pass got to it
    fitted: bool = False


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

    def __init__(
        self, images: int | None = None, *, positions: int = 16, ridge: float = 1e-4, residual: bool = True
    ):
        self.images = images or self.DEFAULT_IMAGES
        self.positions = positions
        self.ridge = ridge
        self.residual = residual  # a branch's last layer also absorbs the shortcut's error (lsq_residual)

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
                kept = kept.to(ctx.device) if kept is not None else None
                fits.append(LayerFit(name, dense, kept_outputs=kept, pruned=module))
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
        return why_not_refit(module)

    # -- the two passes -------------------------------------------------------------------------
    def apply(self, ctx: RecoveryContext) -> StepReport:
        report = StepReport(self.spec)
        fits = self.layers_to_fit(ctx, report)
        if not fits:
            report.notes.append("no Conv2d or Linear layer reads pruned channels: nothing to refit")
            return report
        batches = calibration_inputs(ctx, self.images, self.DENSE_BATCH, self.spec)
        images = sum(len(x) for x in batches)

        with modes_kept(ctx.dense, ctx.model), torch.no_grad():
            ctx.dense.eval()
            ctx.model.eval()
            capture = lsq_dense.dense_capture(
                ctx.dense, ctx.groups, [f.name for f in fits], batches,
                per_image=self.positions, seed=ctx.seed, device=ctx.device, residual=self.residual,
            )
            pruned_run, tails = self.residual_runs(ctx, fits, capture, report)
            self.dense_targets(ctx, capture, fits, tails, batches)
            fits = self.check_calls(fits, len(batches), report)
            pruned_run(fits, torch.cat(batches), report)

        refit = [f for f in fits if f.fitted]
        for f in fits:
            if not f.reached:
                report.skipped[f.name] = "the pruned model never calls it in its forward pass"
        report.notes.append(
            f"{len(refit)} layers refit in forward order on {images} calibration images × "
            f"≤{self.positions} positions, ridge {self.ridge:g} · tr(XᵀX)/D"
        )
        return report

    def residual_runs(
        self, ctx: RecoveryContext, fits: list[LayerFit], capture: lsq_dense.DenseCapture, report: StepReport
    ):
        """How the pruned pass runs, and the residual tails it corrects: plainly, or on the fx
        trace that corrects the tails' targets (:mod:`.lsq_residual`) when ``residual`` is on and
        both models trace alike (the dense model's tails are the capture's)."""
        plain = (lambda fits, x, report: self.pruned_pass(ctx.model, fits, x, report), {})
        if not self.residual:
            return plain
        pruned_gm, why_pruned = trace(ctx.model)
        if capture.untraced is not None or pruned_gm is None:
            report.notes.append(f"residual correction off: {capture.untraced or why_pruned}")
            return plain
        dense_tails, tails = capture.tails, find_tails(pruned_gm, {f.name for f in fits})
        tails = {k: t for k, t in tails.items() if k in dense_tails and dense_tails[k].where == t.where}
        if not tails:
            return plain
        report.notes.append(
            f"{len(tails)} layers end a residual branch: their targets include the other operand's "
            "error (He et al. 2017, section 4.3)"
        )

        def pruned_run(kept: list[LayerFit], x: torch.Tensor, report: StepReport) -> None:
            names = {f.name for f in kept}  # check_calls may have dropped some; tails keep graph order
            kept_tails = {k: t for k, t in tails.items() if k in names}
            self.pruned_pass(pruned_gm, kept, x, report, kept_tails)

        return pruned_run, tails

    @staticmethod
    def dense_targets(
        ctx: RecoveryContext, capture: lsq_dense.DenseCapture, fits: list[LayerFit], tails: dict[str, Tail],
        batches: list[torch.Tensor],
    ) -> None:
        """Fill ``fits`` and ``tails`` from the run's dense capture (:mod:`.lsq_dense`: the same
        for every plan over ``ctx.groups``), kept from an earlier ``lsq`` or ``recon``'s pass
        (:mod:`.lsq_cache`) or taken now, then cut down to the dense outputs each layer still has."""
        if not lsq_cache.restore(ctx.dense, capture.key, fits, tails):
            capture.take(ctx.dense, batches)
            lsq_cache.fill(fits, tails, capture.layers, capture.tails)
        lsq_cache.select_kept(fits, tails)

    @staticmethod
    def check_calls(fits: list[LayerFit], batches: int, report: StepReport) -> list[LayerFit]:
        kept = []
        for f in fits:
            if f.calls == batches and f.captured == batches:
                kept.append(f)
            elif f.calls == 0:
                report.skipped[f.name] = "the dense model never calls it in its forward pass"
            else:
                report.skipped[f.name] = (
                    f"called {f.calls} times over {batches} batches (shared weights): one set of "
                    "weights cannot be fit to several places in the network"
                )
        return kept

    def pruned_pass(
        self, model: nn.Module, fits: list[LayerFit], x: torch.Tensor, report: StepReport,
        tails: dict[str, Tail] | None = None,
    ) -> None:
        """One forward of all images; each layer is refit just before it runs, a residual tail
        (``model`` is then its fx trace) when its add is reached."""
        tails = tails or {}
        inputs: dict[str, torch.Tensor] = {}

        def refit(fit: LayerFit, x: torch.Tensor, correction: torch.Tensor | None = None) -> bool:
            reason = self.fit(fit, x, report, correction)
            fit.fitted = reason is None
            if reason is not None:
                report.skipped[fit.name] = reason
            return fit.fitted

        def arrive(fit: LayerFit, args: tuple) -> None:
            if fit.reached:
                return
            fit.reached = True
            if fit.name in tails:
                inputs[fit.name] = args[0]  # refit where its add is reached (PrunedTailRefit)
            else:
                refit(fit, args[0])

        hooks = [f.pruned.register_forward_pre_hook(lambda m, a, f=f: arrive(f, a)) for f in fits]
        try:
            PrunedTailRefit(model, tails, {f.name: f for f in fits}, inputs, refit).run(x) if tails else model(x)
        finally:
            for hook in hooks:
                hook.remove()
        for fit in fits:  # a tail whose add never ran: refit to its plain target
            if fit.name in inputs:
                refit(fit, inputs.pop(fit.name))

    # -- one layer ------------------------------------------------------------------------------
    def fit(
        self, fit: LayerFit, x: torch.Tensor, report: StepReport, correction: torch.Tensor | None = None
    ) -> str | None:
        """Solve for the layer's weight (and bias) and write them; a reason if it cannot.
        ``correction`` is added to the dense targets (a residual tail's, :mod:`.lsq_residual`)."""
        layer = fit.pruned
        assert fit.positions is not None and layer is not None
        has_bias = layer.bias is not None
        y = torch.cat(fit.targets).double()
        fit.targets.clear()
        if correction is not None:
            y = y + correction
        if input_positions(layer, x) != fit.available:
            return (
                f"its input gives {input_positions(layer, x)} positions per image but the dense output "
                f"has {fit.available}: the pruned layer does not line up with the dense one"
            )
        normal = NormalEquations()
        normal.add_layer(layer, x, fit.positions, y)
        penalty = normal.ridge(self.ridge, has_bias)
        if penalty is None:
            return "its input is zero at every sampled position: there is nothing to fit"
        gram, cross, energy = normal.gram, normal.cross, normal.target_energy.sum()
        theta = torch.linalg.solve(gram + torch.diag(penalty), cross)
        width = gram.shape[0] - int(has_bias)

        weight = layer.weight
        old = weight.detach().reshape(weight.shape[0], -1).T.double()
        if has_bias:
            old = torch.cat([old, layer.bias.detach().double()[None, :]])
        before, after = squared_error(old, gram, cross, energy), squared_error(theta, gram, cross, energy)
        weight.copy_(theta[:width].T.reshape(weight.shape).to(weight.dtype))
        if has_bias:
            layer.bias.copy_(theta[width].to(layer.bias.dtype))
        scale = max(float(energy), 1e-300)
        report.notes.append(
            f"{fit.name}: {len(y)} rows × {width} inputs; relative error {before / scale:.4g} → {after / scale:.4g}"
        )
        return None
