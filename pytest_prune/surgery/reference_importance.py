"""Torch-Pruning's own importance scores on our channel groups, for side-by-side benchmarks.

The benchmarks compare our criteria with Torch-Pruning's (group L1/L2 magnitude, Taylor
|w·∂L/∂w|, LAMP, BatchNorm scale) on exactly the same channel groups; scoring through this module
keeps Torch-Pruning behind the surgery package.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch_pruning as tp
from torch import nn

from ..groups import ChannelGroup
from ..modes import eval_mode
from .graph import trace_model

REFERENCE_IMPORTANCES = ("tp-l1", "tp-taylor", "tp-lamp", "tp-bnscale")


def _importance(kind: str) -> tp.importance.Importance:
    if kind == "tp-l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "tp-taylor":
        return tp.importance.TaylorImportance()
    if kind == "tp-lamp":
        return tp.importance.LAMPImportance(p=2)
    if kind == "tp-bnscale":
        return tp.importance.BNScaleImportance()
    raise ValueError(f"unknown Torch-Pruning importance {kind!r}; use one of {REFERENCE_IMPORTANCES}")


def torch_pruning_scores(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    example_input: torch.Tensor,
    kind: str,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
) -> dict[str, torch.Tensor]:
    """One Torch-Pruning importance per channel of each group (higher = keep)."""
    importance = _importance(kind)
    if kind == "tp-taylor":
        # Taylor reads the gradients stored on the weights: accumulate them on calibration data.
        model.zero_grad(set_to_none=True)
        with eval_mode(model), torch.enable_grad():
            for x, y in batches:
                nn.functional.cross_entropy(model(x), y).backward()
    traced = trace_model(model, example_input, check_layers=False)
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    try:
        for g in groups:
            root = modules[g.root]
            pruner = traced.pruner(root)
            # Torch-Pruning reduces a group's importance by root index into a vector as long as
            # the group, so it needs the root's whole channel range: score all of the root's
            # channels, then keep this group's (each channel's score sums only the layers it
            # reaches, so channels coupled differently keep their own scores).
            full = list(range(pruner.get_out_channels(root)))
            tp_group = traced.graph.get_pruning_group(root, pruner.prune_out_channels, full)
            scores = importance(tp_group)
            if scores is None:  # no layer of the kind this importance reads (e.g. no BatchNorm)
                scores = torch.zeros(len(full))
            out[g.name] = scores.detach().double().cpu()[list(g.root_indices)]
    finally:
        if kind == "tp-taylor":
            model.zero_grad(set_to_none=True)
    return out
