"""``random``: a control criterion; seeded, so the same seed removes the same channels."""

from __future__ import annotations

import zlib

import torch

from .base import Criterion, ScoringContext, Scores
from .registry import register


@register
class RandomScores(Criterion):
    """score_c ~ U(0, 1), drawn per group from a generator seeded by (seed, group name).

    Seeding by group name keeps a group's scores stable when other groups are added or removed.
    """

    name = "random"
    summary = "uniform random scores (control)"
    cost = "none"

    def scores(self, ctx: ScoringContext) -> Scores:
        out: Scores = {}
        for g in ctx.groups:
            seed = (ctx.seed * 1_000_003 + zlib.crc32(g.name.encode())) % (2**63)
            gen = torch.Generator().manual_seed(seed)
            out[g.name] = torch.rand(g.size, generator=gen, dtype=torch.float64)
        return out
