"""``car``: classification accuracy reduction, greedy filter pruning.

Abbasi-Asl, Yu, *Structural Compression of Convolutional Neural Networks Based on Greedy Filter
Pruning*, arXiv:1705.07356, 2017 (journal version: Frontiers in Big Data 4:704182, 2021).

Three paths, each tested against the one before:

* the **reference** (:func:`car_scores` with ``fast=False``): for every candidate channel, mask it
  (:func:`~pytest_prune.masking.channels_masked`: its producer weights zeroed) and run the whole
  model over the calibration subset;
* the **prefix replay** (``delta=False``): per group, the network up to its producers runs once
  per batch and is replayed from a cache (:mod:`._prefix_cache`); only the rest runs per
  candidate, ``copies`` candidates per pass (the batch stacked, forward hooks at the producers
  zeroing another channel in each copy). The reference's numbers wherever a sample's result does
  not depend on its batch: zeroing a producer's output channel gives exactly the zeros that
  zeroing its weights gives, and its other channels do not depend on that channel's weights. Bit
  for bit on the CPUs this project was measured on before; kernels chosen per batch size (a
  GPU's, MKL's sgemm on an AVX-512 Xeon) move a loss in its last bits (about 1e-7), which can
  reorder only channels whose losses agree to that rounding;
* the **consumer delta** (the default, where it applies: a group read by one plain conv or linear
  layer, :mod:`._consumer_delta`): the consumer's output is stored too, and a candidate subtracts
  its channel's share of it, so only what follows the consumer runs per candidate. Equal to the
  reference up to float rounding (same plans on the committed baselines and the benchmark).

Cost (CPU): a late group's candidate costs a small fraction of a full pass, an early one's nearly
a full one under the prefix replay, less under the consumer delta. Unless ``copies`` is given, a
pass stacks more candidates (up to 64) while its stored tensors stay small: after a late group a
pass is mostly call overhead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..errors import DataError, SpecError
from ..groups import ChannelGroup
from ..masking import channels_masked
from ..plan import ALLOCATIONS, Allocation, PrunePlan, removal_count
from ._activations import calibration_subset, eval_mode
from ._consumer_delta import ConsumerDeltas
from ._iterative import NestedGreedy, fingerprint, iterative_plan, shared_sequence, steps_for
from ._prefix_cache import ChannelMask, PrefixCache, stack_copies
from .base import Criterion, ScoringContext, Scores
from .registry import register

_ChannelMask = ChannelMask  # the name pytest_prune.sensitivity.analysis imports

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
_DEFAULT = object()  # "keep the class default" for constructor arguments where None means something
SCHEDULES = ("per-ratio", "nested")


@dataclass(frozen=True)
class CarIndex:
    """CAR and loss increase of every scored channel (NaN where a channel was not a candidate)."""

    accuracy_drop: Scores  # accuracy(current) − accuracy(current without the channel), fraction
    loss_increase: Scores  # mean loss without the channel − mean loss of current
    samples: int

    def scores(self) -> Scores:
        """One number per channel that ranks by CAR, ties broken by the loss increase:
        CAR + (½ + atan(ΔL)/π) / (2·samples). CAR moves in steps of 1/samples, the tie term stays
        inside (0, 1/(2·samples)), so it can only order channels of equal CAR."""
        half_step = 1.0 / (2 * max(self.samples, 1))
        return {
            name: drop + (0.5 + torch.atan(self.loss_increase[name]) / math.pi) * half_step
            for name, drop in self.accuracy_drop.items()
        }


def _outcome(out: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> tuple[int, float]:
    """(correct predictions, summed loss) of one batch; the one place both paths measure."""
    return int((out.argmax(dim=1) == y).sum()), float(loss_fn(out, y)) * y.shape[0]


def default_copies(batches: Batches) -> int:
    """Candidates stacked per pass: up to 2048 samples a pass on a GPU, where one calibration batch
    leaves it idle and stacking is nearly free; up to 128 on a CPU, where a pass costs in proportion
    to its samples and bigger stacks only spill the caches (measured: no gain beyond that)."""
    if not batches:
        return 1
    largest = max(x.shape[0] for x, _ in batches)
    budget = 2048 if batches[0][0].device.type == "cuda" else 128
    return max(1, budget // max(largest, 1))


def _remaining(group: ChannelGroup, removed: PrunePlan) -> list[int]:
    gone = set(removed.remove.get(group.name, ()))
    return [c for c in range(group.size) if c not in gone]


class CarScorer:
    """CAR indices of candidate channels of ``model`` on a fixed calibration subset.

    Keep one scorer for a greedy run: it caches the prefix activations of the group it last scored
    (valid while removals happen only in that group, as in layer-by-layer greedy pruning). The
    model's weights must not change while a scorer is in use.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        batches: Batches,
        loss_fn: nn.Module | None = None,
        *,
        fast: bool = True,
        copies: int | None = None,
        delta: bool = True,
    ):
        self.model = model
        self.groups = list(groups)
        self.batches = list(batches)
        self.loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
        self.fast = fast
        self.copies = copies if copies is not None else default_copies(self.batches)
        self._fixed_copies = copies is not None  # else cheap passes (a late group) stack more
        self._cache_key: tuple | None = None
        self._cache: list[PrefixCache] = []
        # delta=False: every candidate from its producers, the reference's numbers (module docstring)
        self._deltas = ConsumerDeltas(model, [x for x, _ in self.batches]) if fast and delta else None

    def index(self, removed: PrunePlan | None = None, candidates: Mapping[str, Sequence[int]] | None = None) -> CarIndex:
        """CAR of each candidate (default: every channel not in ``removed``) with ``removed`` masked."""
        removed = removed or PrunePlan()
        if candidates is None:
            candidates = {g.name: _remaining(g, removed) for g in self.groups}
        samples = sum(int(y.shape[0]) for _, y in self.batches)
        drop = {g.name: torch.full((g.size,), math.nan, dtype=torch.float64) for g in self.groups}
        rise = {g.name: torch.full((g.size,), math.nan, dtype=torch.float64) for g in self.groups}
        scored = [(g, list(candidates.get(g.name, ()))) for g in self.groups]
        scored = [(g, chosen) for g, chosen in scored if chosen]
        if not scored:
            return CarIndex(drop, rise, samples)
        with eval_mode(self.model), torch.no_grad(), channels_masked(self.model, self.groups, removed):
            if self.fast:  # the unmasked variant replayed like a candidate: the suffix only
                base_correct, base_loss = self._fast(scored[0][0], [None], removed)[0]
            else:
                base_correct, base_loss = self._reference(scored[0][0], [None])[0]
            for g, chosen in scored:
                results = self._fast(g, chosen, removed) if self.fast else self._reference(g, chosen)
                for c, (correct, loss) in zip(chosen, results):
                    drop[g.name][c] = (base_correct - correct) / samples
                    rise[g.name][c] = (loss - base_loss) / samples
        return CarIndex(drop, rise, samples)

    def _reference(self, group: ChannelGroup, chosen: Sequence[int | None]) -> list[tuple[int, float]]:
        """(correct, summed loss) with each channel of ``chosen`` masked in turn (None: none)."""
        results = []
        for c in chosen:
            correct, loss = 0, 0.0
            with channels_masked(self.model, self.groups, PrunePlan({group.name: () if c is None else (c,)})):
                for x, y in self.batches:
                    k, l = _outcome(self.model(x), y, self.loss_fn)
                    correct, loss = correct + k, loss + l
            results.append((correct, loss))
        return results

    def _prefixes(self, group: ChannelGroup, removed: PrunePlan) -> list[PrefixCache]:
        # the prefix depends on removals everywhere but in this group (its producers are all after the cut)
        key = (group.name, tuple(sorted((n, tuple(p)) for n, p in removed.remove.items() if n != group.name and p)))
        if key != self._cache_key:
            self._cache = []  # drop the old one first: only one group's activations held at a time
            producers = {m.module for m in group.producers()}
            self._cache = [PrefixCache(self.model, producers, x) for x, _ in self.batches]
            self._cache_key = key
        return self._cache

    def _fast(self, group: ChannelGroup, chosen: Sequence[int | None], removed: PrunePlan) -> list[tuple[int, float]]:
        """Like :meth:`_reference`, ``copies`` candidates per pass: from the consumer's stored
        output where :mod:`._consumer_delta` applies, else from the cached prefix."""
        delta = self._deltas.get(group, removed) if self._deltas is not None else None
        if delta is not None:
            return self._tally(chosen, delta.run, self.copies if self._fixed_copies else delta.copies(self.copies))
        prefixes = self._prefixes(group, removed)
        # replayed producers carry no weight masking: zero the group's removed channels too
        own = list(removed.remove.get(group.name, ()))

        def run(i: int, part: Sequence[int | None]):
            x, k = self.batches[i][0], len(part)
            mask = ChannelMask(self.model, group, [own + ([] if c is None else [c]) for c in part], x.shape[0])
            try:
                return prefixes[i].run(x.repeat(k, *([1] * (x.dim() - 1))), k)
            finally:
                mask.remove()

        return self._tally(chosen, run, self.copies if self._fixed_copies else stack_copies(prefixes[0], self.copies))

    def _tally(self, chosen: Sequence[int | None], run, copies: int) -> list[tuple[int, float]]:
        """(correct, summed loss) per candidate; ``run(i, part)``: batch i, one copy per candidate."""
        results = [(0, 0.0)] * len(chosen)
        for start in range(0, len(chosen), copies):
            part = chosen[start : start + copies]
            for i, (x, y) in enumerate(self.batches):
                out, n = run(i, part), x.shape[0]
                for j in range(len(part)):
                    correct, loss = _outcome(out[j * n : (j + 1) * n], y, self.loss_fn)
                    old = results[start + j]
                    results[start + j] = (old[0] + correct, old[1] + loss)
        return results


def car_index(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    batches: Batches,
    *,
    fast: bool = True,
    removed: PrunePlan | None = None,
    candidates: Mapping[str, Sequence[int]] | None = None,
    loss_fn: nn.Module | None = None,
    copies: int | None = None,
    delta: bool = True,
) -> CarIndex:
    """CAR and loss increase of every channel of ``groups`` (one-shot, nothing re-scored)."""
    return CarScorer(model, groups, batches, loss_fn, fast=fast, copies=copies, delta=delta).index(removed, candidates)


def car_scores(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    batches: Batches,
    *,
    fast: bool = True,
    loss_fn: nn.Module | None = None,
    copies: int | None = None,
    delta: bool = True,
) -> Scores:
    """The ``car`` scores of every channel; ``fast=False`` is the reference implementation (one
    full forward pass per candidate), ``delta=False`` the fast path with bit-identical numbers
    (the consumer-output shortcut rounds otherwise: :mod:`._consumer_delta`)."""
    return car_index(model, groups, batches, fast=fast, loss_fn=loss_fn, copies=copies, delta=delta).scores()


def car_scores_reference(
    model: nn.Module, groups: Sequence[ChannelGroup], batches: Batches, *, loss_fn: nn.Module | None = None
) -> Scores:
    """The straightforward implementation: mask each channel's weights, run the whole model."""
    return car_scores(model, groups, batches, fast=False, loss_fn=loss_fn)


@register
class CAR(Criterion):
    """CAR_k = accuracy(net) − accuracy(net without channel k); greedy: drop the lowest, re-score.

    Accuracy is top-1 on a fixed calibration subset (the first ``max_samples`` = 256 samples of
    ``ctx.batches``), the model in eval mode, a channel "without" = zeroed at every producer (the
    masked model, equal to the pruned one); ties are broken by the increase of the mean loss
    (``ctx.loss_fn``): score = CAR + (½ + atan(ΔL)/π)/(2N), see :meth:`CarIndex.scores`.

    :meth:`plan` is the greedy algorithm: remove the lowest-score channels, re-score the rest with
    them masked, repeat until the target count. Two schedules:

    * ``per-ratio`` (the default): remove ``per_step`` (raised so that a target takes at most
      ``max_rounds`` = 8 rounds) per round; ``layerwise`` takes groups in order, each losing its
      count while re-scoring only its own channels with the earlier groups' removals masked;
      ``global`` re-scores every group each round and removes the lowest across the network (CAR
      is an accuracy difference, comparable across layers), under
      :func:`~pytest_prune.plan.plan_global`'s floor per group. Round sizes depend on the target
      and a layer's choice on what the earlier layers lost at that ratio: no run serves another.
    * ``nested`` (opt-in: it chooses other channels): rounds on a fixed ratio grid
      (:class:`._iterative.NestedGreedy`): round k re-scores the remaining channels with the
      earlier rounds' removals masked, then cuts at ratio k/``grid`` (``grid`` = 16).
      ``layerwise``: each group on its own, the rest of the network intact, drops its lowest to
      ``removal_count(size, k/grid)``; ``global``: every group scored against the same state, the
      lowest across the network go (CAR is an accuracy difference, comparable across layers),
      under :func:`~pytest_prune.plan.plan_global`'s floor per group. The plan at ratio r is round
      ⌈r·grid⌉ cut at r, so the plan at 0.3 is contained in the plan at 0.7 and one sequence
      serves every ratio: with ``reuse`` (the default) it is kept per process, keyed by the model,
      a digest of its weights and calibration subset, the groups and these settings, and a later
      :meth:`plan` on the same model and data only scores the rounds not scored yet (changed
      weights or data: another key, scored afresh). ``reuse=False`` plans from scratch (the same
      plans: the straightforward path the benchmark ``benchmarks/car_ci.py`` compares with).
      Why not the default: under ``layerwise`` a group is chosen with the other groups intact,
      not with the earlier groups' removals masked, and that costs accuracy (LeNet-5 on digits:
      96.66 % instead of 97.77 % at 0.5, 91.92 % instead of 93.87 % at 0.7); the benchmark gives
      both schedules' top-1 side by side with the paired standard error.

    Cost: a round scores each remaining channel once (a partial pass each, see the module doc);
    ``per-ratio`` scores up to 8 rounds per group and ratio, ``nested`` ⌈r·grid⌉ per group for a
    whole run; fewer ``max_samples``: coarser CAR steps of 1/N.

    Allocation: ``layerwise`` is natural, and the plugin's default for ``car``: the paper's greedy
    pruning is "done layer by layer" (Abbasi-Asl & Yu), although CAR is an accuracy difference that
    would compare across layers; ``--prune-allocation global`` gives the global variant.

    What is whose: the CAR index, the greedy lowest-first removal with re-scoring, and layer-by-layer
    pruning are Abbasi-Asl & Yu's; accuracy on a fixed calibration subset, the loss tie-break, the
    masking as "pruning a filter" without retraining between steps, and the global variant are
    **our reading**.
    """

    name = "car"
    needs_data = True
    summary = "classification accuracy reduction, greedy (Abbasi-Asl & Yu 2017)"
    cost = "one pass over the calibration subset per candidate channel and greedy step"
    natural_allocation: ClassVar[str] = "layerwise"
    plans_from_scores: ClassVar[bool] = False  # greedy: re-scores after each removal
    max_samples: int | None = 256
    schedule: str = "per-ratio"
    grid: int = 16
    reuse: bool = True
    per_step: int = 1
    max_rounds: int | None = 8
    fast: bool = True
    delta: bool = True  # candidates of a plain layer from its consumer's output (._consumer_delta)
    copies: int | None = None

    def __init__(
        self,
        *,
        max_samples: int | None | object = _DEFAULT,
        schedule: str | None = None,
        grid: int | None = None,
        reuse: bool | None = None,
        per_step: int | None = None,
        max_rounds: int | None = -1,
        fast: bool | None = None,
        copies: int | None = None,
        delta: bool | None = None,
    ):
        """Keyword arguments override the class defaults; ``max_samples=None`` uses every sample;
        ``per_step`` and ``max_rounds`` are the ``per-ratio`` schedule's, ``grid`` and ``reuse``
        the ``nested`` one's."""
        if max_samples is not _DEFAULT:
            self.max_samples = max_samples  # type: ignore[assignment]
        if per_step is not None:
            self.per_step = per_step
        if max_rounds != -1:
            self.max_rounds = max_rounds
        if schedule is not None:
            if schedule not in SCHEDULES:
                raise SpecError(f"car: unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
            self.schedule = schedule
        if grid is not None:
            self.grid = grid
        if reuse is not None:
            self.reuse = reuse
        if fast is not None:
            self.fast = fast
        if copies is not None:
            self.copies = copies
        if delta is not None:
            self.delta = delta

    def _per_step(self, count: int) -> int:
        """Channels removed per greedy round: ``per_step``, raised so that no target takes more
        than ``max_rounds`` rounds (re-scoring after every single removal of a 120-unit layer
        costs minutes on a CPU for little change in the ranking)."""
        if self.max_rounds is None:
            return self.per_step
        return max(self.per_step, -(-count // self.max_rounds))

    def scorer(self, ctx: ScoringContext) -> CarScorer:
        batches = calibration_subset(ctx.batches, self.max_samples)
        if not batches:
            raise DataError("criterion 'car' needs calibration data and got none: give it batches (ScoringContext.batches)")
        return CarScorer(ctx.model, ctx.groups, batches, ctx.loss_fn, fast=self.fast, copies=self.copies,
                         delta=self.delta)

    def scores(self, ctx: ScoringContext) -> Scores:
        """One-shot CAR of every channel of the unpruned model."""
        return self.scorer(ctx).index().scores()

    def plan(self, ctx: ScoringContext, ratio: float, allocation: Allocation = "layerwise") -> PrunePlan:
        if allocation not in ("layerwise", "global"):
            raise SpecError(f"unknown allocation {allocation!r}: use one of {', '.join(ALLOCATIONS)}")
        scorer = self.scorer(ctx)
        if self.schedule == "nested":
            def rescore(removed: PrunePlan, groups: Sequence[ChannelGroup]) -> Scores:
                return scorer.index(removed, {g.name: _remaining(g, removed) for g in groups}).scores()

            return self.sequence(ctx, scorer, allocation).plan(ratio, rescore)
        return self._per_ratio_plan(ctx, scorer, ratio, allocation)

    def sequence(self, ctx: ScoringContext, scorer: CarScorer, allocation: Allocation) -> NestedGreedy:
        """The nested greedy sequence of this model, data and settings: the shared one (scored
        rounds kept) with ``reuse``, else a new one."""
        if not self.reuse:
            return NestedGreedy(ctx.groups, allocation, self.grid)
        key = (
            "car", id(ctx.model), type(ctx.model).__qualname__, fingerprint(ctx.model, scorer.batches),
            tuple((g.name, g.size) for g in ctx.groups), allocation, self.grid, self.max_samples,
            self.fast, self.delta, scorer.copies, repr(scorer.loss_fn),
        )
        return shared_sequence(key, ctx.groups, allocation, self.grid)

    def _per_ratio_plan(self, ctx: ScoringContext, scorer: CarScorer, ratio: float, allocation: Allocation) -> PrunePlan:
        if allocation == "global":
            total = sum(g.size for g in ctx.groups)
            count = int(math.floor(ratio * total + 0.5))
            steps = steps_for(count, self._per_step(count))
            return iterative_plan(ctx.groups, ratio, "global", lambda removed: scorer.index(removed).scores(), steps)
        done: dict[str, tuple[int, ...]] = {}
        for g in ctx.groups:

            def rescore(own: PrunePlan, g=g) -> Scores:
                removed = PrunePlan({**done, g.name: own.remove.get(g.name, ())})
                return {g.name: scorer.index(removed, {g.name: _remaining(g, removed)}).scores()[g.name]}

            count = removal_count(g.size, ratio)
            steps = steps_for(count, self._per_step(count))
            done[g.name] = iterative_plan([g], ratio, "layerwise", rescore, steps).remove[g.name]
        return PrunePlan(done)
