"""Which dense filters survive in a candidate: filters matched by cosine similarity.

A candidate made by another tool carries its weights but not the plan that made it. For each
channel group, the candidate's filters of the group's root layer (the conv or linear whose output
channels the group is) are compared with the dense filters of the same layer, and the assignment
that maximises the summed cosine similarity is solved exactly (the Hungarian method, Kuhn 1955, as
``scipy.optimize.linear_sum_assignment``). The dense filters that receive a candidate filter are
the survivors; the others were removed.

The candidate's filters read only the input channels that survived upstream, so roots are matched
in dependency order: a root is matched once every group feeding its input is, and its dense
filters are restricted to the surviving input channels before the comparison (the first conv
reads the image, which nobody prunes). Rows of the root's output that belong to groups matched
earlier and were found removed are left out of the assignment.

Only weights are compared (no bias, no BatchNorm): cosine similarity ignores a filter's scale, so
a candidate whose BatchNorm was folded in, or that was fine-tuned briefly, still matches; the
reported cosines say how well. A candidate cut from this dense model by our surgery, without
fine-tuning, matches with cosine 1 and gives back the exact plan.

Assumed: the candidate keeps surviving channels in their dense order, as Torch-Pruning and our
surgery do (``GroupMatch.in_order`` tells whether the assignment agrees), and its layers have the
dense model's names.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import torch
from torch import nn

from ..errors import WeightsError
from ..groups import ChannelGroup, GroupMember
from ..plan import PrunePlan

Weights = Union[nn.Module, Mapping[str, torch.Tensor]]
_Readers = Mapping[str, list[tuple[str, GroupMember]]]  # layer → (group name, member) on it


@dataclass(frozen=True)
class GroupMatch:
    """The survivors of one channel group, found on its root layer."""

    group: str
    layer: str  # the root layer whose filters were compared
    kept: tuple[int, ...]  # group positions (0 .. size-1) present in the candidate
    removed: tuple[int, ...]
    cosine: tuple[float, ...]  # per kept position: similarity of its candidate and dense filter
    in_order: bool  # the candidate holds the survivors in their dense order

    @property
    def mean_cosine(self) -> float:
        return sum(self.cosine) / len(self.cosine) if self.cosine else 0.0

    @property
    def min_cosine(self) -> float:
        return min(self.cosine, default=0.0)


@dataclass(frozen=True)
class FilterMatch:
    """Per channel group, which dense channels the candidate kept and how closely they match."""

    groups: Mapping[str, GroupMatch]

    @property
    def plan(self) -> PrunePlan:
        """The recovered plan: the removed positions of every group."""
        return PrunePlan({name: m.removed for name, m in self.groups.items()})

    @property
    def min_cosine(self) -> float:
        return min((m.min_cosine for m in self.groups.values()), default=1.0)

    @property
    def mean_cosine(self) -> float:
        cosines = [c for m in self.groups.values() for c in m.cosine]
        return sum(cosines) / len(cosines) if cosines else 1.0

    def worst(self, count: int = 3) -> list[GroupMatch]:
        """The groups with the lowest mean cosine, worst first."""
        return sorted(self.groups.values(), key=lambda m: m.mean_cosine)[:count]


def _state(weights: Weights) -> dict[str, torch.Tensor]:
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    return {k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}


def _surviving(size: int, members: list[tuple[str, GroupMember]], removed) -> list[int]:
    """Positions of a ``size``-wide dimension left once the removed channels of ``members`` go."""
    gone = {i for name, m in members for c in removed[name] for i in m.indices[c]}
    return [i for i in range(size) if i not in gone]


def _cosines(candidate: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """[candidate rows × dense rows] cosine similarity of flattened filters (zero filters: 0)."""
    c = candidate.flatten(1).double()
    d = dense.flatten(1).double()
    c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-30)
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return c @ d.T


def _root_weights(
    group: ChannelGroup, dense: Mapping[str, torch.Tensor], candidate: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    key = f"{group.root}.weight"
    if key not in dense:
        raise WeightsError(f"channel group {group.name!r}: the dense model has no {key!r}")
    if key not in candidate:
        raise WeightsError(
            f"channel group {group.name!r}: the candidate has no {key!r}; its layers must keep "
            "the dense model's names"
        )
    d, c = dense[key], candidate[key]
    if d.dim() < 2 or c.dim() != d.dim() or c.shape[2:] != d.shape[2:]:
        raise WeightsError(
            f"layer {group.root!r}: the candidate's weight has shape {tuple(c.shape)}, which is "
            f"not a pruned version of the dense {tuple(d.shape)}"
        )
    return d, c


def _assign(similarity: torch.Tensor, certain: list[bool]) -> list[tuple[int, int]]:
    """(candidate row, dense column) pairs of the assignment with the largest summed similarity.

    Columns marked ``certain`` get a bonus larger than any difference of cosines, so every
    optimal assignment covers them: rows of groups matched earlier that are known to survive
    must not be traded for another group's channels when filters match poorly.
    """
    bonus = torch.tensor([3.0 if c else 0.0 for c in certain], dtype=similarity.dtype)
    from scipy.optimize import linear_sum_assignment  # here: scipy.optimize takes ~1 s to import, and only candidates need it

    rows, cols = linear_sum_assignment((similarity + bonus).numpy(), maximize=True)
    return list(zip(rows.tolist(), cols.tolist()))


def _match_group(
    group: ChannelGroup,
    dense: Mapping[str, torch.Tensor],
    candidate: Mapping[str, torch.Tensor],
    consumers: _Readers,
    producers: _Readers,
    removed: Mapping[str, tuple[int, ...]],
) -> GroupMatch:
    dense_w, cand_w = _root_weights(group, dense, candidate)
    inputs = _surviving(dense_w.shape[1], consumers[group.root], removed)
    if cand_w.shape[1] != len(inputs):
        raise WeightsError(
            f"layer {group.root!r}: the candidate reads {cand_w.shape[1]} input channels, but "
            f"the channels matched upstream leave {len(inputs)} of the dense {dense_w.shape[1]}"
        )
    settled = [(n, m) for n, m in producers[group.root] if n in removed]
    rows = _surviving(dense_w.shape[0], settled, removed)
    if cand_w.shape[0] > len(rows):
        raise WeightsError(
            f"layer {group.root!r}: the candidate has {cand_w.shape[0]} filters, more than the "
            f"{len(rows)} dense filters the channels matched so far leave"
        )
    restricted = dense_w[rows][:, inputs]
    similarity = _cosines(cand_w, restricted)
    settled_rows = {i for _, m in settled for idx in m.indices for i in idx}  # survivors only
    pairs = _assign(similarity, [r in settled_rows for r in rows])
    (root,) = [m for m in group.producers() if m.module == group.root]
    position_of = {idx[0]: p for p, idx in enumerate(root.indices)}
    found = sorted(  # (candidate row, group position, cosine), in the candidate's order
        (r, position_of[rows[col]], float(similarity[r, col]))
        for r, col in pairs
        if rows[col] in position_of
    )
    in_order = all(a[1] < b[1] for a, b in zip(found, found[1:]))
    by_position = sorted((p, cos) for _, p, cos in found)
    kept = {p for p, _ in by_position}
    return GroupMatch(
        group=group.name,
        layer=group.root,
        kept=tuple(sorted(kept)),
        removed=tuple(p for p in range(group.size) if p not in kept),
        cosine=tuple(cos for _, cos in by_position),
        in_order=in_order,
    )


def match_filters(
    dense: Weights, candidate: Weights, groups: Sequence[ChannelGroup]
) -> FilterMatch:
    """Recover, per channel group of ``dense``, which channels ``candidate`` kept.

    ``dense`` and ``candidate`` are models or state dicts with the same layer names; ``groups``
    are the dense model's (``find_channel_groups``). Raises :class:`WeightsError` when a root
    layer is missing or its shape cannot come from pruning the dense one.
    """
    dense_state, cand_state = _state(dense), _state(candidate)
    consumers: dict[str, list[tuple[str, GroupMember]]] = defaultdict(list)
    producers: dict[str, list[tuple[str, GroupMember]]] = defaultdict(list)
    for g in groups:
        for m in g.members:
            (producers if m.role == "producer" else consumers)[m.module].append((g.name, m))
    removed: dict[str, tuple[int, ...]] = {}
    matches: dict[str, GroupMatch] = {}
    pending = list(groups)
    while pending:
        ready = [g for g in pending if all(n in removed for n, _ in consumers[g.root])]
        if not ready:
            names = [g.name for g in pending[:5]]
            raise WeightsError(
                f"channel groups {names} read each other's channels in a cycle; their filters "
                "cannot be matched in dependency order"
            )
        for g in ready:
            matches[g.name] = _match_group(
                g, dense_state, cand_state, consumers, producers, removed
            )
            removed[g.name] = matches[g.name].removed
            pending.remove(g)
    return FilterMatch({g.name: matches[g.name] for g in groups})
