"""A dependency walk that never settles is a refusal naming the layer, not a hang (MaxViT).

Torch-Pruning follows channels through MaxViT's attention over ``[B, G, P, D]`` tokens (a chunk of
the last axis, reshapes into heads, matrix products) with index mappings meant for dim 1, and its
walk from each ``to_qkv`` kept growing past 10 GiB. The same attention in miniature hands layers
indices beyond their width and returns to one operation dozens of times (49) before it stops,
with groups that tie wrong positions.
"""

from __future__ import annotations

import pytest
import torch
from surgery_cases import TOLERANCE, random_plan
from torch import nn

from pytest_prune.equivalence import check_pruned_sizes, max_abs_difference
from pytest_prune.errors import TraceError
from pytest_prune.surgery import find_channel_groups, prune_model
from pytest_prune.surgery.walk_guard import BACKSTOP, WalkDiverged, bounded_walk


class TokenAttention(nn.Module):
    """conv stem → [B, G, P, D] tokens → qkv linear, chunk of the last axis, heads, einsum → merge."""

    def __init__(self, d: int = 8, heads: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(3, d, 3, padding=1)
        self.to_qkv, self.merge, self.heads = nn.Linear(d, 3 * d), nn.Linear(d, d), heads
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        t = self.stem(x)
        b, d, h, w = t.shape
        t = t.reshape(b, d, 2, h // 2, w).permute(0, 2, 3, 4, 1).reshape(b, 2, (h // 2) * w, d)
        q, k, v = torch.chunk(self.to_qkv(t), 3, dim=-1)
        q, k, v = (z.reshape(b, 2, -1, self.heads, z.shape[-1] // self.heads).permute(0, 1, 3, 2, 4) for z in (q, k, v))
        attention = torch.einsum("bghid,bghjd->bghij", q, k).softmax(-1)
        out = torch.einsum("bghij,bghjd->bghid", attention, v).permute(0, 1, 3, 2, 4).reshape(b, 2, -1, v.shape[-1] * self.heads)
        return self.head(self.merge(out).mean((1, 2)))


def _model():
    torch.manual_seed(0)
    return TokenAttention().eval(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_a_walk_that_does_not_settle_is_refused_with_the_layer_and_the_fix():
    model, x = _model()
    with pytest.raises(TraceError) as info:
        find_channel_groups(model, x)
    message = str(info.value)
    assert "the channels of 'to_qkv' cannot be followed" in message
    assert "--prune-ignore=to_qkv" in message


def test_ignoring_the_layer_prunes_the_rest_exactly():
    model, x = _model()
    groups = find_channel_groups(model, x, ignore=["to_qkv"])
    assert {g.name for g in groups} == {"stem", "merge"}
    plan = random_plan(groups, 0.4, seed=1)
    pruned = prune_model(model, groups, plan, x)
    assert max_abs_difference(model, pruned, groups, plan, x) <= TOLERANCE
    assert check_pruned_sizes(model, pruned, groups, plan).ok


def test_the_guard_allows_revisits_in_range_and_stops_at_the_backstop():
    from torch_pruning.dependency import group as tp_group

    original = tp_group.Group.add_dep
    graph = type("Graph", (), {})()  # never consulted: the target is no layer
    group, dep = tp_group.Group(), type("Dep", (), {"target": type("Node", (), {"module": None})(), "handler": len})()
    with bounded_walk(graph):
        for _ in range(BACKSTOP - 1):
            group.add_dep(dep, [])  # revisits with indices in range: a walk along many paths
    with pytest.raises(WalkDiverged) as info, bounded_walk(graph):
        group.add_dep(dep, [])
    assert info.value.node is dep.target and len(group.items) == BACKSTOP
    assert tp_group.Group.add_dep is original


def test_a_shared_block_read_by_a_flatten_settles_after_several_revisits():
    """A drawn architecture whose walk returns to one node 8 times with indices in range (a layer
    run twice, then a flattening head): traced, not refused."""
    from pytest_prune import strategies as S

    split = S.ConvSpec(1, 2, 3, batchnorm=False, activation="none")
    body = (S.ConvSpec(1, 3, 3, batchnorm=False, activation="none"),)
    head = S.HeadSpec(6, "flatten", 4, None, "none", 1)
    case = S.PruningCase.of(S.Architecture(1, 2, (S.SharedSpec(split, body),), head, seed=0), training=False)
    assert case.groups
