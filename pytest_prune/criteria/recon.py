"""``recon``: the channels whose removal the least-squares refit (``--prune-recovery lsq``) can best
absorb, chosen greedily per group from the consumers' reconstruction error (ThiNet).

Luo, Wu, Lin, "ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression", ICCV
2017, section 3.2: choose the input channels of the next layer whose removal changes its output
least, greedily, then refit the remaining weights by least squares (section 3.3; the ``lsq`` step).
ThiNet's greedy scores a candidate set by the error *before* the refit; He, Zhang, Sun (ICCV 2017)
select by a LASSO relaxation of the error *after* it. Here the greedy runs on the error after the
refit itself, computed exactly for every candidate at every step (backward elimination for least
squares), which is what the gate then measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Iterator, Sequence

import torch
from torch import nn

from ..groups import ChannelGroup, GroupMember
from ..modes import eval_mode
from ..plan import rank_keys
from ..recovery.lsq_capture import DenseSampling, NormalEquations, SampledLayer, out_width, run_dense
from ._activations import calibration_subset, example_of, trace_calls
from .base import Criterion, ScoringContext, Scores, SharedDensePass
from .bn_error import next_batchnorm, output_scale
from .registry import register

# The sampled positions belong to the criterion, not to the run: ``--prune-seed`` varies random
# controls, and a deterministic criterion's plan must not move with it (tests/criteria/test_seeds.py).
POSITION_SEED = 0
# Without a BatchNorm after the consumer, output weights are 1 / (var_o + VARIANCE_FLOOR · mean var):
# an output that never varies must not dominate the sum with an infinite weight.
VARIANCE_FLOOR = 1e-3
# Images per forward of the scoring pass: lsq's (LeastSquaresReconstruction.DENSE_BATCH), so that
# one pass can serve both (capture_consumers).
PASS_BATCH = 128


def consumer_columns(module: nn.Module, member: GroupMember) -> torch.Tensor | None:
    """(channels, block) columns of ``module``'s least-squares rows that carry each channel of the
    group: a conv's input channel i is columns i·k² … i·k² + k² − 1 (the im2col order of
    :func:`~pytest_prune.recovery.lsq_capture.input_rows`), a linear layer's input position is one
    column. None where the channels own unequal numbers of columns (not batched; left out)."""
    per_input = math.prod(module.kernel_size) if isinstance(module, nn.Conv2d) else 1
    blocks = [[i * per_input + t for i in idx for t in range(per_input)] for idx in member.indices]
    if len({len(b) for b in blocks}) != 1:
        return None
    return torch.as_tensor(blocks, dtype=torch.long)


def refit_consumers(model: nn.Module, group: ChannelGroup) -> list[tuple[GroupMember, nn.Module]]:
    """The consumers ``lsq`` refits, as the same rows: plain (ungrouped) ``Conv2d`` and ``Linear``."""
    out = []
    for member in group.consumers():
        module = model.get_submodule(member.module)
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            out.append((member, module))
    return out


@dataclass
class ConsumerRefit:
    """One consumer during the greedy: P = (AᵀA + Λ)⁻¹ over the columns still kept (zero rows and
    columns for those removed) and θ = P·AᵀY, with Y's outputs weighted (:func:`output_weights`)."""

    columns: torch.Tensor  # (channels, block)
    inverse: torch.Tensor  # P (D × D)
    theta: torch.Tensor  # θ (D × outputs)

    @classmethod
    def start(
        cls, normal: NormalEquations, columns: torch.Tensor, has_bias: bool, ridge: float, weights: torch.Tensor
    ) -> "ConsumerRefit | None":
        """The refit on every column; output o of AᵀY scaled by √w_o (:func:`output_weights`), so
        that θ's error is Σ_o w_o ‖y_o − ŷ_o‖² (each output is fit on its own: weights change
        which channels cost most, not the refit)."""
        penalty = normal.ridge(ridge, has_bias)
        if penalty is None:
            return None  # the consumer's input is zero: no channel changes what it computes
        assert normal.gram is not None and normal.cross is not None
        inverse = torch.linalg.inv(normal.gram + torch.diag(penalty))
        return cls(columns, inverse, inverse @ (normal.cross * weights.sqrt()))

    def removal_costs(self, left: torch.Tensor) -> torch.Tensor:
        """Increase of the refit error if each channel still ``left`` went next:
        Δ_c = tr(θ_Bᵀ P_BB⁻¹ θ_B), B the channel's columns."""
        idx = self.columns[left]
        p_bb = self.inverse[idx[:, :, None], idx[:, None, :]]
        theta_b = self.theta[idx]
        return (theta_b * torch.linalg.solve(p_bb, theta_b)).sum(dim=(1, 2))

    def remove(self, channel: int) -> None:
        """Drop the channel's columns: P ← P − P_·B P_BB⁻¹ P_B·, θ ← θ − P_·B P_BB⁻¹ θ_B (the
        refit on the columns left, without solving again; rows and columns B become zero)."""
        b = self.columns[channel]
        p_b = self.inverse[:, b]
        p_bb = p_b[b]
        self.theta -= p_b @ torch.linalg.solve(p_bb, self.theta[b])
        self.inverse -= p_b @ torch.linalg.solve(p_bb, p_b.T)
        self.inverse[b, :] = 0.0
        self.inverse[:, b] = 0.0
        self.theta[b] = 0.0


def output_weights(normal: NormalEquations, bn_scale: torch.Tensor | None) -> torch.Tensor:
    """w_o, the weight of the consumer's output o in its error, divided by rows · outputs (a mean):
    (γ_o/σ_o)² when a BatchNorm reads the output (the error as that BatchNorm passes it on: an
    output it scales down matters less), else 1 / var_o (floored), the normalisation a BatchNorm
    would make, so that the error is unit-free either way."""
    assert normal.target_sum is not None and normal.target_energy is not None
    rows = max(normal.rows, 1)
    if bn_scale is not None:
        weight = bn_scale.double().to(normal.target_sum.device).pow(2)
    else:
        mean = normal.target_sum / rows
        variance = (normal.target_energy / rows - mean.pow(2)).clamp_min(0.0)
        weight = 1.0 / (variance + VARIANCE_FLOOR * float(variance.mean()) + 1e-300)
    return weight / (rows * len(weight))


def greedy_scores(refits: Sequence[ConsumerRefit], size: int) -> torch.Tensor:
    """Backward elimination: remove, one at a time, the channel whose removal increases the summed
    refit error of the consumers least. Score = √ of the error added by the channels removed so
    far, made strictly increasing along the removal order (so the k lowest scores are the greedy's
    first k removals, up to the ranking's rounding: steps that add less than ``plan.RANK_PRECISION``
    of the largest score tie, and ties go to the lower index); the last channel, never removed,
    is scored by what removing it too would cost."""
    scores = torch.empty(size, dtype=torch.float64)
    left = torch.ones(size, dtype=torch.bool)
    error, previous = 0.0, -1.0
    for _ in range(size):
        cost = torch.zeros(size, dtype=torch.float64)
        for refit in refits:  # the last channel too: its score must rank above every other's
            cost[left] += refit.removal_costs(left).cpu()
        # rounded (plan.rank_keys): a near-tie goes to the lower index on every machine
        c = int(torch.argmin(rank_keys(torch.where(left, cost.clamp_min(0.0), torch.full_like(cost, math.inf)))))
        error += max(float(cost[c]), 0.0)
        score = math.sqrt(error)
        previous = score if score > previous else math.nextafter(previous, math.inf)
        scores[c] = previous
        left[c] = False
        if bool(left.any()):
            for refit in refits:
                refit.remove(c)
    return scores


def capture_consumers(
    model: nn.Module, groups: Sequence[ChannelGroup], batches: Sequence[torch.Tensor], positions: int,
    shared: SharedDensePass | None = None,
) -> dict[str, NormalEquations]:
    """One dense forward pass over the images of ``batches``: the normal equations of every refit
    consumer of every group (dense input rows against dense outputs at the sampled positions), by
    module name; a consumer called other than once per batch (shared weights) is left out, as
    ``lsq`` leaves it. The images run in batches of :data:`PASS_BATCH`, ``lsq``'s own, so that
    ``shared`` (a run's ``lsq`` step: :mod:`pytest_prune.recovery.lsq_shared`) can take its dense
    capture in the same pass. The two passes give the same scores where an image's output does
    not depend on its batch: on the CPU kernels measured (LeNet-5, the CIFAR ResNets), and in
    ``tests/recovery/test_lsq_shared.py``, where a batch crosses recon's limit."""
    layers: dict[str, SampledLayer] = {}
    for g in groups:
        for member, module in refit_consumers(model, g):
            layers.setdefault(member.module, SampledLayer(member.module, module, normal=NormalEquations()))
    images = sum(len(x) for x in batches)
    sampling = DenseSampling(list(layers.values()), images, positions, torch.Generator().manual_seed(POSITION_SEED))
    with eval_mode(model), torch.no_grad():
        if shared is None or not shared.run_with([sampling], batches):
            run_dense(model, [sampling], rebatched(batches, PASS_BATCH))
    return {
        name: layer.normal
        for name, layer in layers.items()
        if layer.normal is not None and layer.calls == sampling.batches == layer.captured
    }


def rebatched(batches: Sequence[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """The images of ``batches`` in batches of ``size`` (the last may be smaller), one at a time."""
    pending: list[torch.Tensor] = []
    held = 0
    for x in batches:
        while len(x):
            piece, x = x[: size - held], x[size - held :]
            pending.append(piece)
            held += len(piece)
            if held == size:
                yield torch.cat(pending)
                pending, held = [], 0
    if pending:
        yield torch.cat(pending)


@register
class Reconstruction(Criterion):
    """Greedy removal order by the consumers' least-squares reconstruction error after the refit.

    For a consumer j of the group (a conv or linear layer reading its channels) with rows A (its
    input patches at sampled positions of the calibration images, dense network) and targets Y (its
    dense outputs there), keeping the columns S and refitting gives the error

        E_j(S) = min_θ ‖A_S θ − Y‖²_w + λ‖θ‖² = ‖Y‖²_w − tr(C_Sᵀ (G_SS + Λ)⁻¹ C_S),

    G = AᵀA, C = AᵀY, λ = ridge · tr(G)/D (``lsq``'s ridge; the bias column is kept and not
    penalised), ‖·‖_w weighting output o by (γ_o/σ_o)² of the BatchNorm after the consumer, or
    by 1/var_o without one (:func:`output_weights`). Removing channel c
    (columns B) from S adds Δ_c = tr(θ_Bᵀ P_BB⁻¹ θ_B), P = (G_SS + Λ)⁻¹, θ = P C_S, and P and θ
    are downdated in closed form (:class:`ConsumerRefit`). The greedy removes the channel of least
    Σ_j Δ_c over the group's consumers (a residual stream has many), one at a time; a channel that
    the others reproduce exactly costs zero, however large its weights (Luo et al. 2017, ThiNet,
    with the error after the refit, as in He et al. 2017's least-squares step).

    Data: the first ``max_samples`` (512) calibration samples × ``positions`` (16) output positions
    per image, drawn with a fixed seed (:data:`POSITION_SEED`). Cost: one dense forward pass that
    builds each consumer's G and C with ``lsq``'s own code (:mod:`pytest_prune.recovery.lsq_capture`),
    then per group a greedy of O(channels · consumers · D² · block) (D a consumer's inputs × k²).
    A run scores it once for all its targets (``pipeline.planning``), and when the run applies
    ``lsq`` that one pass also takes ``lsq``'s dense capture (``ScoringContext.shared_dense_pass``,
    :mod:`pytest_prune.recovery.lsq_shared`): selection and refit then cost one dense pass for the
    run plus one pruned pass per method.
    Groups whose consumers are grouped convs or others ``lsq`` does not refit get zero scores.

    Allocation: with ``global``, one ranking of √(error in the next BatchNorm's output units)
    across groups decides how much each group loses -- the errors are comparable because each is
    what that BatchNorm passes on -- and that is where this criterion wins: ``benchmarks/
    allocation.py`` (inner channels and residual streams, then ``lsq:2048``, exact 932, mean of
    ``lsq`` seeds 0–4) measured ``recon`` global at 92.55 % / 89.10 % on ResNet-56 at ``macs:0.59``
    / ``macs:0.45``, +1.9 ± 0.7 and +2.3 ± 0.9 points over the best Torch-Pruning anchor, while
    ``recon`` layer-wise was 88.5 % / 84.3 %, below the anchors. Split by sensitivity it was behind
    at macs:0.59 (91.39 %), level at macs:0.45 (89.27 %) and behind on ResNet-20 at macs:0.45
    (82.2 % against 83.3 %), at the cost of the analysis; so its natural allocation is ``global``,
    for channel fractions and budgets alike
    (``allocations.GLOBAL_CRITERIA`` lists it).
    """

    name = "recon"
    needs_data = True
    summary = "greedy on the consumers' least-squares error after the refit (ThiNet, Luo et al. 2017)"
    cost = "1 forward pass over 512 samples (shared with lsq's dense pass) + a greedy per group on each consumer's normal equations"
    natural_allocation: ClassVar[str] = "global"
    max_samples: int = 512
    positions: int = 16
    ridge: float = 1e-4

    def __init__(self, max_samples: int | None = None, positions: int | None = None, ridge: float | None = None):
        if max_samples is not None:
            self.max_samples = max_samples
        if positions is not None:
            self.positions = positions
        if ridge is not None:
            self.ridge = ridge

    def scores(self, ctx: ScoringContext) -> Scores:
        batches = calibration_subset(ctx.batches, self.max_samples)
        trace = trace_calls(ctx.model, example_of(batches, self.name))  # which BatchNorm reads what
        normals = capture_consumers(ctx.model, ctx.groups, [x for x, _ in batches], self.positions, ctx.shared_dense_pass)
        out: Scores = {}
        with torch.no_grad():
            for g in ctx.groups:
                refits = []
                for member, module in refit_consumers(ctx.model, g):
                    columns = consumer_columns(module, member)
                    if member.module not in normals or columns is None:
                        continue
                    normal = normals[member.module]
                    bn = next_batchnorm(ctx.model, trace, member.module)
                    scale = None if bn is None else output_scale(ctx.model, trace, member.module, out_width(module))
                    weights = output_weights(normal, scale)
                    refit = ConsumerRefit.start(normal, columns, module.bias is not None, self.ridge, weights)
                    if refit is not None:
                        refits.append(refit)
                out[g.name] = greedy_scores(refits, g.size) if refits else torch.zeros(g.size, dtype=torch.float64)
        return out
