"""Provenance: what a measurement was made on, recorded so that a failure can say what changed.

Every baseline and every row of ``results.csv`` records

* the dense model: a digest of its state dict and its top-1 on the evaluation split;
* the data: digests of the evaluation split (images and labels) and of the calibration split;
* the plan: how many channels each group lost, with a digest of which ones (and the positions
  themselves while they are few, so that a changed plan can be counted channel by channel);
* the compressed model: a digest and a fingerprint of its state dict, and its MACs and parameters per layer.

:func:`explain_changes` compares two records and names what moved: the dense model, the data,
the plan, the compressed weights for the same plan, the per-layer counts — or nothing, which
leaves a numerical difference in evaluation (another CPU's rounding, a changed kernel).

Digests are SHA-256 over raw tensor bytes, shortened to 16 hex digits: bit-exact by design. A
tensor that a loader computes with a reduction (a mean, a sum), or draws with ``torch.randn``, may
differ in its last bits between CPUs, and then so does its digest; the built-in data sets compute
their normalisation with exactly rounded sums (:func:`math.fsum`) for that reason. So the dense
model and each split also record a fingerprint (:mod:`.fingerprint`), and a moved digest counts as
a change only when the fingerprints differ too (or the baseline has none): a user's seeded
``torch.randn`` data or default-initialised model is the same on every CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..digests import add_tensor
from ..groups import ChannelGroup
from ..measure import ModelCount
from ..plan import PrunePlan
from .fingerprint import Fingerprint, fingerprints_match

DIGEST_LENGTH = 16  # hex digits kept: 64 bits, ample to tell versions of one model apart
POSITIONS_KEPT = 2048  # a plan records its removed positions while it removes at most this many
DIGEST_BATCH_SIZE = 512  # a split's digest covers each batch's shape: stored digests used this size


def state_dict_digest(model: nn.Module) -> str:
    """Digest of every parameter and buffer, by name (order-independent, device-independent)."""
    hasher = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        hasher.update(name.encode())
        add_tensor(hasher, tensor)
    return hasher.hexdigest()[:DIGEST_LENGTH]


def dataset_digest(data: Dataset | Iterable, batch_size: int = DIGEST_BATCH_SIZE) -> str:
    """Digest of a split's images and labels, in order (a dataset or an iterable of batches, which
    must then be of ``DIGEST_BATCH_SIZE`` to match the digests of the same data as a dataset)."""
    return split_identity(data, batch_size)[0]


def split_identity(data: Dataset | Iterable, batch_size: int = DIGEST_BATCH_SIZE) -> tuple[str, dict[str, Any]]:
    """A split's digest (bit-exact) and fingerprint (:mod:`.fingerprint`: equal up to rounding),
    from one pass over its batches (a streamed loader is read once)."""
    batches = DataLoader(data, batch_size=batch_size) if isinstance(data, Dataset) else data
    hasher, fingerprint = hashlib.sha256(), Fingerprint()
    for images, labels in batches:
        images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        add_tensor(hasher, images)
        add_tensor(hasher, labels)
        fingerprint.add(images, "images")
        fingerprint.add(labels, "labels")
    return hasher.hexdigest()[:DIGEST_LENGTH], fingerprint.record()


def positions_digest(positions: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, positions)).encode()).hexdigest()[:DIGEST_LENGTH]


def plan_record(groups: Sequence[ChannelGroup], plan: PrunePlan | None) -> dict[str, Any] | None:
    """``{"removed": {group: count}, "digest": ..., "positions": {group: [...]}}`` (positions while few)."""
    if plan is None:
        return None
    removed = {g.name: sorted(plan.remove.get(g.name, ())) for g in groups}
    text = ";".join(f"{name}:{','.join(map(str, pos))}" for name, pos in removed.items())
    record: dict[str, Any] = {
        "removed": {name: len(pos) for name, pos in removed.items()},
        "digest": hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH],
        "group_digests": {name: positions_digest(pos) for name, pos in removed.items()},
    }
    if plan.count() <= POSITIONS_KEPT:
        record["positions"] = {name: pos for name, pos in removed.items() if pos}
    return record


def layer_counts(count: ModelCount) -> dict[str, list[int]]:
    """``{layer: [MACs, params]}`` per sample, for the layers that have either."""
    return {layer.name: [layer.macs, layer.params] for layer in count.layers}


# -- comparing two records -------------------------------------------------------------------------
def _pct(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else "?"


def dense_model_change(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """``the dense model (digest a → b, top-1 x → y)`` when its digest moved, else ``None``."""
    old, new = stored.get("dense_model", {}), current.get("dense_model", {})
    # a moved digest with matching fingerprints: the same weights up to another CPU's rounding
    if not old or not _moved(old.get("digest"), new.get("digest"), old.get("fingerprint"), new.get("fingerprint")):
        return None
    return (
        f"the dense model (state-dict digest {old.get('digest')} → {new.get('digest')}, "
        f"top-1 {_pct(old.get('top1'))} → {_pct(new.get('top1'))}; weights "
        f"{old.get('weights')} → {new.get('weights')})"
    )


def data_change(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """Which splits now hold other images or labels than the baseline's, else ``None``."""
    old, new = stored.get("data", {}), current.get("data", {})
    moved = [
        f"{split} digest {old[split]} → {new.get(split)}"
        for split in ("evaluation", "calibration")
        if split in old and _split_moved(old, new, split)
    ]
    return "; ".join(moved) or None


def _moved(old_digest: Any, new_digest: Any, old_print: Any, new_print: Any) -> bool:
    """A digest that moved for more than rounding (its fingerprints differ, or one is missing)."""
    return old_digest != new_digest and not fingerprints_match(old_print, new_print)


def _split_moved(old: Mapping[str, Any], new: Mapping[str, Any], split: str) -> bool:
    before, after = old.get("fingerprints", {}), new.get("fingerprints", {})
    return _moved(old.get(split), new.get(split), before.get(split), after.get(split))


def rounding_only(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs from the baseline only in its last bits (digests moved, fingerprints match)."""
    parts = []
    old, new = stored.get("dense_model", {}), current.get("dense_model", {})
    if old.get("digest") not in (None, new.get("digest")) and dense_model_change(stored, current) is None:
        parts.append("the dense model's weights")
    old, new = stored.get("data", {}), current.get("data", {})
    for split in ("evaluation", "calibration"):
        if old.get(split) not in (None, new.get(split)) and not _split_moved(old, new, split):
            parts.append(f"the {split} data")
    return parts


def plan_change(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """How many channels of which groups the plan removes differently, else ``None``."""
    old, new = stored.get("plan"), current.get("plan")
    if not old or not new or old.get("digest") == new.get("digest"):
        return None
    old_pos, new_pos = old.get("positions"), new.get("positions")
    parts, differing = [], 0
    for name in sorted(set(old["removed"]) | set(new["removed"])):
        a, b = old["removed"].get(name), new["removed"].get(name)
        same = old.get("group_digests", {}).get(name) == new.get("group_digests", {}).get(name)
        if same and a == b:
            continue
        if old_pos is not None and new_pos is not None:
            diff = len(set(old_pos.get(name, [])) ^ set(new_pos.get(name, [])))
            differing += diff
            parts.append(f"{name}: {a} → {b} removed, {diff} channel(s) differ")
        else:
            parts.append(f"{name}: {a} → {b} removed" + (", other channels" if a == b else ""))
    count = f"{differing} channel(s) differ in " if differing else ""
    shown = "; ".join(parts[:6]) + (f"; … {len(parts) - 6} more groups" if len(parts) > 6 else "")
    return f"the plan ({count}{len(parts)} of {len(new['removed'])} groups: {shown})"


def count_change(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """Which layers' MACs or parameter counts moved, else ``None``."""
    old, new = stored.get("layers"), current.get("layers")
    if not old or not new or old == new:
        return None
    parts = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a != b:
            parts.append(f"{name}: MACs {a[0] if a else '-'} → {b[0] if b else '-'}, "
                         f"params {a[1] if a else '-'} → {b[1] if b else '-'}")
    shown = "; ".join(parts[:6]) + (f"; … {len(parts) - 6} more layers" if len(parts) > 6 else "")
    return f"layer counts ({shown})"


def explain_changes(stored: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str:
    """One line naming what differs between a baseline's provenance and this run's."""
    if not stored:
        return ("the baseline records no provenance (written by an older pytest-prune); rewrite it "
                "with --prune-update-baselines to record the dense model, data and plan")
    changes = [c for c in (dense_model_change(stored, current), data_change(stored, current),
                           plan_change(stored, current), count_change(stored, current)) if c]
    if changes:
        return "changed since the baseline: " + " | ".join(changes)
    old_c, new_c = stored.get("compressed_digest"), current.get("compressed_digest")
    compressed_moved = bool(old_c and new_c and old_c != new_c)
    if compressed_moved and _moved(old_c, new_c, stored.get("compressed_fingerprint"),
                                   current.get("compressed_fingerprint")):
        return (f"same dense model, data and plan, but other compressed weights (digest {old_c} → "
                f"{new_c}): the surgery or the recovery now computes something else from the same plan")
    rounded = rounding_only(stored, current) + (["the compressed weights"] if compressed_moved else [])
    if rounded:
        return (f"nothing recorded changed beyond rounding ({' and '.join(rounded)} differ from the "
                "baseline's in their last bits only, as another CPU's kernels make them; same plan): a "
                "numerical difference (another CPU's rounding or a changed kernel)")
    return ("nothing recorded changed (same dense model, data, plan and compressed weights): a "
            "numerical difference in evaluation (another CPU's rounding or a changed kernel)")
