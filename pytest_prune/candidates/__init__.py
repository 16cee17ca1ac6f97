"""Release candidates made by any tool, loaded for gating against their dense reference.

    file ─► files.py: every zip entry's CRC; which kind
      ├─ state dict ─► state_dict.py: widths from shapes → plan (matching.py where the
      │                shortcut needs it) → our surgery on the dense model → strict load
      └─ .pt2 ───────► exported.py: refuse archives that could run code → torch.export.load

* :func:`load_candidate` — a :class:`Candidate` (model, kind, widths, notes) from a file;
* :func:`match_filters` — which dense filters survive in a candidate, per channel group, by
  cosine similarity and optimal assignment; gives back the plan of a candidate cut from the dense
  model.

A library: nothing here knows pytest or the plugin, and only the surgery module touches
Torch-Pruning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import torch
from torch import nn

from ..groups import ChannelGroup
from ..models.loading import read_state_dict
from ..plan import PrunePlan
from ..surgery import find_channel_groups
from .exported import ExportedModel, load_exported
from .files import open_candidate_file
from .matching import FilterMatch, GroupMatch, match_filters
from .state_dict import Placement, shrink_to_candidate

__all__ = [
    "Candidate", "ExportedModel", "FilterMatch", "GroupMatch", "load_candidate", "match_filters"
]

CandidateKind = Literal["state_dict", "exported"]


@dataclass
class Candidate:
    """A loaded candidate: the model to measure and what was learnt while loading it."""

    model: nn.Module
    kind: CandidateKind
    name: str  # the file's stem, for reports
    widths: dict[str, int]  # output channels (features) of every layer with a weight
    notes: list[str] = field(default_factory=list)
    plan: PrunePlan | None = None  # state dicts: the plan that shrank the dense architecture
    match: FilterMatch | None = None  # state dicts whose placement was recovered by matching

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The candidate's tensors under its layer names (an exported program's, not its
        wrapper's): what :func:`match_filters` compares with the dense model."""
        if isinstance(self.model, ExportedModel):
            return self.model.weights()
        return self.model.state_dict()


def layer_widths(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Output width per layer: dim 0 of its weight (of its running mean without a weight)."""
    widths: dict[str, int] = {}
    for key, tensor in state.items():
        layer, _, attr = key.rpartition(".")
        if attr in ("weight", "running_mean") and tensor.dim() >= 1:
            widths.setdefault(layer, int(tensor.shape[0]))
    return widths


def load_candidate(
    path: str | Path,
    dense_model: nn.Module,
    example_input: torch.Tensor,
    *,
    groups: Sequence[ChannelGroup] | None = None,
    placement: Placement = "auto",
) -> Candidate:
    """Load the candidate at ``path`` as a model comparable with ``dense_model``.

    * A state dict (``torch.save(model.state_dict())`` or ``{'state_dict': ...}``), read with
      ``weights_only=True``, whose layers may have fewer channels than ``dense_model``'s: the
      dense architecture is shrunk to the candidate's widths by our surgery and loaded strictly
      (see :func:`~pytest_prune.candidates.state_dict.shrink_to_candidate` for ``placement``,
      which matters only for the option-A CIFAR ResNet shortcut). ``groups`` are
      ``dense_model``'s channel groups, found when not given.
    * A ``torch.export`` program (``torch.export.save``), refused if loading it could run code
      stored in it, and wrapped as ``program.module()``.

    ``dense_model`` is not modified. Raises :class:`~pytest_prune.errors.WeightsError`, with a
    message naming the file and the layer, for missing, truncated, altered, unsafe or ill-fitting
    files.
    """
    file = open_candidate_file(path)
    name = file.path.stem
    if file.kind == "exported":
        model = load_exported(file, example_input)
        notes = [
            "a torch.export program, checked to hold no pickles, compiled code or executable "
            "strings; it runs its captured graph, in the mode it was exported in"
        ]
        if model.spec.high is not None:
            notes.append(
                f"the program takes {model.spec.describe()}: it is run in batches of at most "
                f"{model.spec.high} samples (latency included), the last padded by repeats"
            )
        return Candidate(model, "exported", name, layer_widths(model.weights()), notes)
    state = read_state_dict(file.path)
    if groups is None:
        groups = find_channel_groups(dense_model, example_input)
    shrunk = shrink_to_candidate(
        dense_model, state, groups, example_input, placement=placement, source=str(file.path)
    )
    widths = layer_widths(state)
    return Candidate(
        shrunk.model, "state_dict", name, widths, shrunk.notes, shrunk.plan, shrunk.match
    )
