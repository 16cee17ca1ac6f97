"""``lsq``'s dense pass: which layers it captures, and why that is the same for every plan of a run.

The dense half of ``lsq`` is each refit layer's dense output at sampled positions (and each residual
tail's other operand there, :mod:`.lsq_residual`). The positions are drawn at each layer's first
call, in forward order, from one generator seeded with the run's seed, so a layer's positions
depend on which layers are drawn before it. Drawn over the layers *this* plan refits, a plan that
spares a group (a global allocation often spares the stem's residual stream) would move the
positions of every later layer, and its capture could serve no other plan of the run.

So the pass captures every layer that any plan over the run's channel groups can refit: each
plain ``Conv2d`` or ``Linear`` that consumes a group (:func:`captured_names`), whichever of them
this plan refits. A layer's positions then depend on the seed, the images and the groups, never on
the plan; a plan that refits every consumer (every group loses channels: layer-wise plans, most
budgets) draws exactly what it drew over its own refit layers. One capture, kept in
:mod:`.lsq_cache`, serves every ``lsq`` of the run, and ``recon``'s scoring pass can take it for
all of them (:mod:`.lsq_shared`). A plan that spares a group pays for the spared consumers'
targets in that one pass (``images × positions × outputs`` floats each), not for a pass of its own.

Without groups (a candidate compressed elsewhere) the refit layers are all there is to go by, and
the pass captures just those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import fx, nn

from ..groups import ChannelGroup, is_conv_or_linear
from . import lsq_cache
from .lsq_capture import DenseSampling, SampledLayer, run_dense
from .lsq_residual import DenseAddCapture, Tail, find_tails, trace


def why_not_refit(module: nn.Module) -> str | None:
    """Why ``lsq`` cannot refit ``module`` (None: it can)."""
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        return f"only Conv2d and Linear layers are refit, this is {type(module).__name__}"
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return (
            f"grouped convolution (groups={module.groups}): each output sees only its own "
            "group of inputs, which one least-squares fit over all inputs does not respect"
        )
    return None


def captured_names(dense: nn.Module, groups: Sequence[ChannelGroup] | None, refit: Sequence[str]) -> list[str]:
    """The layers the dense pass captures, in the dense model's module order: the ``refit`` ones and,
    with ``groups``, every layer ``lsq`` can refit that consumes a group."""
    wanted = set(refit)
    if groups is not None:
        wanted |= {member.module for group in groups for member in group.consumers()}
    return [
        name for name, module in dense.named_modules()
        if name in wanted and is_conv_or_linear(module) and why_not_refit(module) is None
    ]


def residual_dense_run(
    dense_gm: fx.GraphModule, tails: dict[str, Tail], layers: Sequence[SampledLayer]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The dense pass on the fx trace, keeping each tail's other operand at its sampled positions."""
    by_name = {layer.name: layer for layer in layers}
    seen = [0]

    def dense_run(x: torch.Tensor) -> torch.Tensor:
        out = DenseAddCapture(dense_gm, tails, by_name, lambda: seen[0]).run(x)
        seen[0] += len(x)
        return out

    return dense_run


@dataclass
class DenseCapture:
    """What one dense pass captures (at full width), how it runs, and the key it is kept under."""

    layers: list[SampledLayer]
    tails: dict[str, Tail]  # every captured layer that ends a residual branch (residual targets on)
    run: Callable[[torch.Tensor], torch.Tensor]
    key: tuple
    per_image: int  # positions sampled per image
    seed: int  # seeds the generator the positions are drawn from
    untraced: str | None = None  # why fx could not trace the dense model (residual targets asked)

    def take(self, dense: nn.Module, batches: Sequence[torch.Tensor], others: Sequence[DenseSampling] = ()) -> None:
        """Run the pass over ``batches`` (with ``others``' hooks riding it) and keep it in :mod:`.lsq_cache`."""
        images = sum(len(x) for x in batches)
        own = DenseSampling(self.layers, images, self.per_image, torch.Generator().manual_seed(self.seed))
        run_dense(self.run, [own, *others], batches)
        lsq_cache.keep(dense, self.key, self.layers, self.tails)


def dense_capture(
    dense: nn.Module, groups: Sequence[ChannelGroup] | None, refit: Sequence[str], batches: Sequence[torch.Tensor],
    *, per_image: int, seed: int, device: torch.device, residual: bool,
) -> DenseCapture:
    """The capture for a plan refitting ``refit`` (see the module docstring): the same layers, tails
    and key for every plan over ``groups``; nothing runs yet. ``residual`` asks for the tails'
    other operands, on the fx trace."""
    modules = dict(dense.named_modules())
    layers = [SampledLayer(name, modules[name]) for name in captured_names(dense, groups, refit)]
    run, tails, untraced = dense, {}, None
    if residual:
        dense_gm, untraced = trace(dense)  # untraceable: the refit keeps plain targets and says why
        if dense_gm is not None:
            tails = find_tails(dense_gm, {layer.name for layer in layers})
            if tails:
                run = residual_dense_run(dense_gm, tails, layers)
    settings = (per_image, seed, len(batches[0]) if batches else 0, str(device))
    key = lsq_cache.capture_key(dense, batches, settings, layers, tails)
    return DenseCapture(layers, tails, run, key, per_image, seed, untraced)
