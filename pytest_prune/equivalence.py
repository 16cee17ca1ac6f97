"""Is a pruned model the masked dense model? The two checks every surgery must pass.

* :func:`max_abs_difference` — outputs of the pruned model against the masked dense model
  (:func:`~pytest_prune.masking.mask_channels`), both in eval mode and float32: exact surgery
  gives round-off only.
* :func:`check_pruned_sizes` — every parameter and buffer of the pruned model has the shape
  that the groups and the plan alone predict, so the parameter count is the dense count minus
  the removed slices. Worked out per tensor rather than summed per slice: a conv that loses
  input channels to one group and output channels to another loses their product once, a
  BatchNorm loses running statistics as well as scale and shift, and a linear layer after a
  flatten loses one column per spatial position of each removed channel.

Knows nothing of Torch-Pruning: it checks the surgery from the outside.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .groups import ChannelGroup, weight_axis
from .masking import mask_channels
from .modes import eval_mode
from .plan import PrunePlan


def _as_float32(model: nn.Module) -> nn.Module:
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.dtype == torch.float32 for t in tensors if t.is_floating_point()):
        return model
    return copy.deepcopy(model).float()  # never change the caller's model


def _output_tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _output_tensors(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _output_tensors(item)]
    return []


def max_abs_difference(
    dense: nn.Module,
    pruned: nn.Module,
    groups: Sequence[ChannelGroup],
    plan: PrunePlan,
    inputs: torch.Tensor,
) -> float:
    """Largest absolute difference between ``pruned(inputs)`` and the masked dense model's output.

    ``math.inf`` when the outputs differ in number or shape: then no tolerance can accept them.
    """
    masked = _as_float32(mask_channels(dense, groups, plan))
    candidate = _as_float32(pruned)
    x = inputs.float()
    with torch.no_grad(), eval_mode(masked), eval_mode(candidate):
        want = _output_tensors(masked(x))
        got = _output_tensors(candidate(x))
    if len(want) != len(got) or any(a.shape != b.shape for a, b in zip(want, got)):
        return math.inf
    return max((float((a - b).abs().max()) if a.numel() else 0.0) for a, b in zip(want, got))


def _removed_positions(
    groups: Sequence[ChannelGroup], plan: PrunePlan
) -> dict[tuple[str, str], set[int]]:
    """(module, role) → the channel positions the plan removes there."""
    by_name = {g.name: g for g in groups}
    removed: dict[tuple[str, str], set[int]] = {}
    for name, positions in plan.remove.items():
        for member in by_name[name].members:
            gone = removed.setdefault((member.module, member.role), set())
            gone.update(i for p in positions for i in member.indices[p])
    return removed


def _lost_along(module: nn.Module, tensor_name: str, tensor: torch.Tensor, dim: int,
                produced: int, consumed: int) -> int:
    """How many entries of ``tensor`` along ``dim`` go when ``produced`` output and ``consumed``
    input channels of ``module`` go."""
    if tensor_name != "weight" or tensor.dim() < 2:
        return produced if dim == 0 else 0  # bias, BatchNorm scale, shift and statistics
    # a grouped conv's weight holds one group's inputs (or outputs, transposed): it loses one
    # entry per G channels
    per_entry = getattr(module, "groups", 1)
    if dim == weight_axis(module, "producer"):
        return produced // per_entry if getattr(module, "transposed", False) else produced
    return consumed if getattr(module, "transposed", False) else consumed // per_entry


def expected_shapes(
    dense: nn.Module, groups: Sequence[ChannelGroup], plan: PrunePlan
) -> dict[str, tuple[int, ...]]:
    """State-dict name → the shape the pruned tensor must have.

    Producers lose positions along dim 0 of every tensor they hold (weight, bias, BatchNorm
    statistics); consumers lose positions along dim 1 of their weight (one per G removed inputs
    for a grouped conv, which removes inputs in equal numbers from each of its G groups). A
    transposed conv holds its weight the other way round, (in, out / groups, k, k).
    """
    removed = _removed_positions(groups, plan)
    shapes: dict[str, tuple[int, ...]] = {}
    for module_name, module in dense.named_modules():
        tensors = list(module.named_parameters(recurse=False)) + list(
            module.named_buffers(recurse=False)
        )
        produced = len(removed.get((module_name, "producer"), ()))
        consumed = len(removed.get((module_name, "consumer"), ()))
        for tensor_name, tensor in tensors:
            shape = list(tensor.shape)
            for dim in range(min(2, tensor.dim())):
                shape[dim] -= _lost_along(module, tensor_name, tensor, dim, produced, consumed)
            full = f"{module_name}.{tensor_name}" if module_name else tensor_name
            shapes[full] = tuple(shape)
    return shapes


@dataclass(frozen=True)
class SizeCheck:
    """Parameter counts and tensor shapes of a pruned model against what the plan predicts."""

    dense_parameters: int
    expected_parameters: int
    pruned_parameters: int
    mismatches: tuple[str, ...]  # "name: expected (…), got (…)" per tensor that differs

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.expected_parameters == self.pruned_parameters

    def __str__(self) -> str:
        head = (
            f"parameters: dense {self.dense_parameters}, expected {self.expected_parameters}, "
            f"pruned {self.pruned_parameters}"
        )
        return "; ".join([head, *self.mismatches[:10]])


def check_pruned_sizes(
    dense: nn.Module, pruned: nn.Module, groups: Sequence[ChannelGroup], plan: PrunePlan
) -> SizeCheck:
    """Compare every parameter and buffer shape of ``pruned`` with :func:`expected_shapes`."""
    want = expected_shapes(dense, groups, plan)
    got = {n: tuple(t.shape) for n, t in pruned.state_dict().items()}
    mismatches = [
        f"{name}: expected {want.get(name)}, got {got.get(name)}"
        for name in sorted(set(want) | set(got))
        if want.get(name) != got.get(name)
    ]
    parameter_names = {n for n, _ in dense.named_parameters()}
    return SizeCheck(
        dense_parameters=sum(p.numel() for p in dense.parameters()),
        expected_parameters=sum(math.prod(want[n]) for n in parameter_names),
        pruned_parameters=sum(p.numel() for p in pruned.parameters()),
        mismatches=tuple(mismatches),
    )
