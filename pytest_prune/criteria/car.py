"""``car``: classification accuracy reduction, greedy filter pruning.

Abbasi-Asl, Yu, *Structural Compression of Convolutional Neural Networks Based on Greedy Filter
Pruning*, arXiv:1705.07356, 2017 (journal version: Frontiers in Big Data 4:704182, 2021).

Two implementations compute the same numbers:

* the **reference** (:func:`car_scores` with ``fast=False``): for every candidate channel, mask it
  (:func:`~pytest_prune.masking.channels_masked`: its producer weights zeroed) and run the whole
  model over the calibration subset;
* the **fast** path (the default): for each group, the network up to the group's producers
  (included, when nothing else runs between them) runs once per batch and is replayed from a cache
  (:mod:`._prefix_cache`); only the rest runs per candidate. ``copies`` candidates share one pass:
  the batch is stacked that many times and forward hooks at every producer of the group zero a
  different channel in each copy (a per-sample channel mask). The unmasked accuracy is replayed
  the same way.

Why they agree bit for bit: zeroing a producer's output channel gives exactly the zeros that
zeroing its weights gives, a conv's or BatchNorm's other output channels do not depend on that
channel's weights, and on CPU a sample's result does not depend on the batch it is computed in
(tested on the models here). On a GPU, kernels chosen per batch size may change the loss in its
last bits when ``copies`` > 1; the accuracy part is unaffected unless two logits tie.

Where the time goes (CPU, one thread, CIFAR ResNet-20): per candidate, only the layers from the
group's consumer on run, so a group in the last stage costs a small fraction of a full pass and one
in the first stage nearly a full one; stacking copies saves nothing on a CPU (passes cost in
proportion to their samples) and is what pays on a GPU, where one calibration batch leaves the
device idle.
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
from ._iterative import iterative_plan, steps_for
from ._prefix_cache import PrefixCache
from .base import Criterion, ScoringContext, Scores
from .registry import register

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
_DEFAULT = object()  # "keep the class default" for constructor arguments where None means something


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


class _ChannelMask:
    """Forward hooks that zero, in copy j of a stacked batch, the channels ``zeroed[j]`` of a group
    at every one of its producers (replayed ones included)."""

    def __init__(self, model: nn.Module, group: ChannelGroup, zeroed: Sequence[Sequence[int]], batch: int):
        self.handles = []
        for member in group.producers():
            module = model.get_submodule(member.module)
            self.handles.append(module.register_forward_hook(self._hook(member.indices, zeroed, batch)))

    @staticmethod
    def _hook(indices, zeroed, batch):
        masks: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() < 2:
                return None
            key = (output.shape[1], output.device, output.dtype)
            if key not in masks:
                m = torch.ones(len(zeroed), output.shape[1], dtype=output.dtype, device=output.device)
                for j, channels in enumerate(zeroed):
                    m[j, [i for c in channels for i in indices[c]]] = 0
                m = m.repeat_interleave(batch, dim=0)
                masks[key] = m.reshape(m.shape + (1,) * (output.dim() - 2))
            return output * masks[key]

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


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
    ):
        self.model = model
        self.groups = list(groups)
        self.batches = list(batches)
        self.loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
        self.fast = fast
        self.copies = copies if copies is not None else default_copies(self.batches)
        self._cache_key: tuple | None = None
        self._cache: list[PrefixCache] = []

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
        """Like :meth:`_reference`, ``copies`` candidates per pass, from the cached prefix."""
        prefixes = self._prefixes(group, removed)
        # replayed producers carry no weight masking: zero the group's removed channels too
        own = list(removed.remove.get(group.name, ()))
        results = [(0, 0.0)] * len(chosen)
        for start in range(0, len(chosen), self.copies):
            part = chosen[start : start + self.copies]
            zeroed = [own + ([] if c is None else [c]) for c in part]
            k = len(part)
            for (x, y), prefix in zip(self.batches, prefixes):
                n = x.shape[0]
                mask = _ChannelMask(self.model, group, zeroed, n)
                try:
                    out = prefix.run(x.repeat(k, *([1] * (x.dim() - 1))), k)
                finally:
                    mask.remove()
                for j in range(k):
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
) -> CarIndex:
    """CAR and loss increase of every channel of ``groups`` (one-shot, nothing re-scored)."""
    return CarScorer(model, groups, batches, loss_fn, fast=fast, copies=copies).index(removed, candidates)


def car_scores(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    batches: Batches,
    *,
    fast: bool = True,
    loss_fn: nn.Module | None = None,
    copies: int | None = None,
) -> Scores:
    """The ``car`` scores of every channel; ``fast=False`` is the reference implementation
    (one full forward pass per candidate). Both give identical numbers; time them with this."""
    return car_index(model, groups, batches, fast=fast, loss_fn=loss_fn, copies=copies).scores()


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

    :meth:`plan` is the greedy algorithm: remove the ``per_step`` (default 1, raised so that a target
    takes at most ``max_rounds`` = 8 rounds) lowest-score channels,
    re-score the rest with them masked, repeat until the target count.

    * ``layerwise`` (the paper's way: layer by layer): groups are taken in order; each loses exactly
      ``removal_count(size, ratio)`` channels, re-scoring only its own remaining channels, with the
      earlier groups' removals kept masked.
    * ``global``: each round scores every remaining channel of every group and removes the lowest
      across the network (CAR is an accuracy difference, comparable across layers), under
      :func:`~pytest_prune.plan.plan_global`'s floor per group.

    Cost: a greedy layer of n channels losing t costs about t·n candidate evaluations; with
    ``fast=True`` each is a pass over the calibration subset from the group's consumers on (what
    comes before is replayed), ``copies`` candidates per pass. ``per_step`` > 1 trades fidelity for
    fewer rounds; ``max_samples`` sets the subset (fewer samples: coarser CAR steps of 1/N).

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
    per_step: int = 1
    max_rounds: int | None = 8
    fast: bool = True
    copies: int | None = None

    def __init__(
        self,
        *,
        max_samples: int | None | object = _DEFAULT,
        per_step: int | None = None,
        max_rounds: int | None = -1,
        fast: bool | None = None,
        copies: int | None = None,
    ):
        """Keyword arguments override the class defaults; ``max_samples=None`` uses every sample."""
        if max_samples is not _DEFAULT:
            self.max_samples = max_samples  # type: ignore[assignment]
        if per_step is not None:
            self.per_step = per_step
        if max_rounds != -1:
            self.max_rounds = max_rounds
        if fast is not None:
            self.fast = fast
        if copies is not None:
            self.copies = copies

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
        return CarScorer(ctx.model, ctx.groups, batches, ctx.loss_fn, fast=self.fast, copies=self.copies)

    def scores(self, ctx: ScoringContext) -> Scores:
        """One-shot CAR of every channel of the unpruned model."""
        return self.scorer(ctx).index().scores()

    def plan(self, ctx: ScoringContext, ratio: float, allocation: Allocation = "layerwise") -> PrunePlan:
        scorer = self.scorer(ctx)
        if allocation == "global":
            total = sum(g.size for g in ctx.groups)
            count = int(math.floor(ratio * total + 0.5))
            steps = steps_for(count, self._per_step(count))
            return iterative_plan(ctx.groups, ratio, "global", lambda removed: scorer.index(removed).scores(), steps)
        if allocation != "layerwise":
            raise SpecError(f"unknown allocation {allocation!r}: use one of {', '.join(ALLOCATIONS)}")
        done: dict[str, tuple[int, ...]] = {}
        for g in ctx.groups:

            def rescore(own: PrunePlan, g=g) -> Scores:
                removed = PrunePlan({**done, g.name: own.remove.get(g.name, ())})
                return {g.name: scorer.index(removed, {g.name: _remaining(g, removed)}).scores()[g.name]}

            count = removal_count(g.size, ratio)
            steps = steps_for(count, self._per_step(count))
            done[g.name] = iterative_plan([g], ratio, "layerwise", rescore, steps).remove[g.name]
        return PrunePlan(done)
