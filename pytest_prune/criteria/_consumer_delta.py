"""CAR's candidates of a plain layer scored from its consumer's output: one input channel's share
subtracted instead of the consumer recomputed.

Where a group's channels reach the rest of the network only through one consumer -- a conv
(``groups=1``) or linear layer -- and every operation between the producers and the consumer maps a
zero channel to a zero channel of its input (ReLU, max- and average-pooling, flatten, dropout in
eval, a BatchNorm whose entry is masked with its producer), zeroing channel ``c`` changes the
consumer's input only in the positions ``P_c`` of that channel, to zero. The consumer is linear in
its input, so its output becomes

    out_c = out − W[:, P_c] ⊛ x[:, P_c]

(a convolution, or a matrix product, over those positions alone: 1/C of the consumer's work).
:class:`ConsumerDelta` records the model up to and including the consumer once per batch
(:class:`~._prefix_cache.PrefixCache`, with the consumer's input kept), and each candidate pass
replays it with that share subtracted from the consumer's stored output in its copy of the batch;
only the layers after the consumer run. For the first group of issue 16's CIFAR CNN that is the
difference between running conv2, conv3 and the classifier per candidate and running conv3 and the
classifier.

Equal to masking up to float rounding, not bit for bit: ``out − share`` rounds otherwise than the
consumer summing one term fewer (about 1e-7 relative). A candidate's CAR counts images whose
top-1 changes, so two logits within that rounding of each other could count differently; CAR's
plans on the committed LeNet-5 baselines and on the benchmark's CNN are identical to the exact
path's (``benchmarks/car_ci.py`` prints both). Where the conditions cannot be shown to hold, the
exact path is used: a group with several consumers, a grouped or non-zero-padded conv, a consumer
called more than once per pass, a consumer with no module after it (the last layer: its group's
exact path is short anyway), or a check that fails -- on the first batch, one channel with a
non-zero share, the model output by this path must equal the masked model's (within 1e-4 of the
output's scale), which catches a non-zero-preserving operation (a sigmoid) or a second path from
the producers to the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..groups import ChannelGroup, GroupMember
from ..plan import PrunePlan
from ._prefix_cache import ChannelMask, PrefixCache, copies_within

CHECK_TOLERANCE = 1e-4  # of max(1, |output|): rounding is ~1e-7, a wrong share is of the output's size


def eligible_consumer(model: nn.Module, group: ChannelGroup) -> GroupMember | None:
    """The group's one consumer, if it is a layer whose output is linear in each input channel."""
    consumers = group.consumers()
    if len(consumers) != 1:
        return None
    module = model.get_submodule(consumers[0].module)
    if isinstance(module, nn.Linear):
        return consumers[0]
    if type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros":
        return consumers[0]
    return None


@dataclass
class _Recorded:
    prefix: PrefixCache
    inputs: torch.Tensor  # the consumer's input in this batch (the current state)


class ConsumerDelta:
    """The consumer-output replay of one group, for the current removals (the caller masks them)."""

    def __init__(self, model: nn.Module, group: ChannelGroup, member: GroupMember, batches: Sequence[torch.Tensor]):
        self.model, self.group, self.member = model, group, member
        self.module = model.get_submodule(member.module)
        self.batches = list(batches)
        self.recorded = [self._record(x) for x in self.batches]
        self._per_copy: int | None = None

    def _record(self, x: torch.Tensor) -> _Recorded:
        seen: list[torch.Tensor] = []

        def keep_input(module, inputs):
            if not seen:  # the recording pass; the cache's second pass replays the consumer
                seen.append(inputs[0].detach().clone())

        handle = self.module.register_forward_pre_hook(keep_input)
        try:
            prefix = PrefixCache(self.model, {self.member.module}, x)
        finally:
            handle.remove()
        return _Recorded(prefix, seen[0] if seen else torch.empty(0))

    def usable(self) -> bool:
        """Whether this path gives the masked model's outputs here (see the module docstring)."""
        first = self.recorded[0]
        if not first.prefix.reached or first.inputs.numel() == 0:
            return False
        probe = next((c for c in range(self.group.size) if self._share(first.inputs, c).abs().max() > 0), None)
        calls = [0]
        counter = self.module.register_forward_pre_hook(lambda m, i: calls.__setitem__(0, calls[0] + 1))
        try:
            x = self.batches[0]
            mask = ChannelMask(self.model, self.group, [[] if probe is None else [probe]], x.shape[0])
            try:
                expected = self.model(x)
            finally:
                mask.remove()
        finally:
            counter.remove()
        if calls[0] != 1:  # run twice (shared weights): the stored output is not the only one
            return False
        got = self.run(0, [probe])
        scale = max(1.0, float(expected.abs().max()))
        return bool(got.shape == expected.shape and (got - expected).abs().max() <= CHECK_TOLERANCE * scale)

    def _share(self, inputs: torch.Tensor, channel: int) -> torch.Tensor:
        """``W[:, P_c] ⊛ x[:, P_c]``: what channel ``channel`` adds to the consumer's output."""
        return self._shares(inputs, [channel])[0]

    def _shares(self, inputs: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
        """The shares of ``channels`` stacked, ``(len(channels), *output shape)``, in one call: a
        grouped conv (one group per channel) or one product, not a call per candidate."""
        index = [self.member.indices[c] for c in channels]
        if len({len(p) for p in index}) != 1:  # channels of unequal widths: one call each
            return torch.stack([self._share(inputs, c) for c in channels])
        k, p, n, m = len(index), len(index[0]), inputs.shape[0], self.module
        flat = torch.tensor(index, device=inputs.device).reshape(-1)
        part, weight = inputs.index_select(1, flat), m.weight.index_select(1, flat)
        out = weight.shape[0]
        if isinstance(m, nn.Linear):
            return torch.einsum("nkp,okp->kno", part.reshape(n, k, p), weight.reshape(out, k, p))
        kernel = weight.reshape(out, k, p, *weight.shape[2:]).transpose(0, 1).reshape(k * out, p, *weight.shape[2:])
        y = F.conv2d(part, kernel, None, m.stride, m.padding, m.dilation, groups=k)
        return y.reshape(n, k, out, *y.shape[2:]).transpose(0, 1)

    def copies(self, base: int) -> int:
        """Candidates per pass: ``base``, or more while the stacked consumer output stays within
        :data:`STACK_ELEMENTS` (a pass after a late consumer is mostly per-call overhead)."""
        if self._per_copy is None:
            self._per_copy = self._share(self.recorded[0].inputs, 0).numel()
        return copies_within(self._per_copy, base)

    def run(self, i: int, chosen: Sequence[int | None]) -> Any:
        """The model on batch ``i`` stacked ``len(chosen)`` times, copy j without channel
        ``chosen[j]`` (None: none), from the consumer's stored output on."""
        record, x = self.recorded[i], self.batches[i]
        n, k = x.shape[0], len(chosen)
        scored = [j for j, c in enumerate(chosen) if c is not None]
        shares = self._shares(record.inputs, [chosen[j] for j in scored]) if scored else None

        def subtract(module, inputs, output):  # the replayed output is a fresh copy: in place
            stacked = output.view(k, n, *output.shape[1:])
            if len(scored) == k:
                stacked -= shares
            else:
                stacked[scored] -= shares
            return output

        handle = self.module.register_forward_hook(subtract) if scored else None
        # the input's values are never read: everything up to the consumer is answered from the
        # cache; its shape is (``x.flatten(1)``...). Anything that did read them would fail the check.
        stacked = torch.empty((k * n, *x.shape[1:]), dtype=x.dtype, device=x.device)
        try:
            return record.prefix.run(stacked, k)
        finally:
            if handle is not None:
                handle.remove()


class ConsumerDeltas:
    """The :class:`ConsumerDelta` of the group last scored, rebuilt when a removal changes; the
    groups where it cannot be used (see the module docstring) are remembered and left to the
    exact path."""

    def __init__(self, model: nn.Module, batches: Sequence[torch.Tensor]):
        self.model, self.batches = model, list(batches)
        self._key: tuple | None = None
        self._current: ConsumerDelta | None = None
        self._exact: set[str] = set()

    def get(self, group: ChannelGroup, removed: PrunePlan) -> ConsumerDelta | None:
        if group.name in self._exact:
            return None
        # the consumer's input holds every removal, its own group's included
        key = (group.name, tuple(sorted((n, tuple(p)) for n, p in removed.remove.items() if p)))
        if key == self._key:
            return self._current
        self._key, self._current = None, None  # one group's activations held at a time
        member = eligible_consumer(self.model, group)
        delta = ConsumerDelta(self.model, group, member, self.batches) if member is not None else None
        if delta is None or not delta.usable():
            self._exact.add(group.name)
            return None
        self._key, self._current = key, delta
        return delta
