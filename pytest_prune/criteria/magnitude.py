"""``l1``: filter L1 norm (Li, Kadav, Durdanovic, Samet, Graf, ICLR 2017)."""

from __future__ import annotations

import torch

from ..groups import member_weight_slices
from .base import Criterion, ScoringContext, Scores
from .registry import register


@register
class L1Norm(Criterion):
    """score_c = Σ over the group's producer convs/linears of Σ|W[c]| (the filter's L1 norm).

    Li et al. rank the filters of a layer by the sum of absolute kernel weights. A channel tied to
    several producers (a residual stream) sums their norms. BatchNorm entries are not weights of a
    filter and are left out, as in the paper.
    """

    name = "l1"
    summary = "filter L1 norm (Li et al. 2017)"
    cost = "one read of the weights; no data"

    def scores(self, ctx: ScoringContext) -> Scores:
        out: Scores = {}
        for g in ctx.groups:
            total = torch.zeros(g.size, dtype=torch.float64)
            for member in g.producers():
                module = ctx.model.get_submodule(member.module)
                if not isinstance(module, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)):
                    continue
                for c, parts in enumerate(member_weight_slices(ctx.model, member)):
                    total[c] += float(parts[0].abs().sum())
            out[g.name] = total
        return out
