"""Fingerprints (pytest_prune.pipeline.fingerprint): equal for the same values up to another CPU's
rounding, different for any real change of the data or weights."""

import json
import os
import subprocess
import sys

import torch

from pytest_prune.pipeline.fingerprint import batches_fingerprint, fingerprints_match, state_dict_fingerprint
from pytest_prune.pipeline.provenance import data_change, dense_model_change, explain_changes, split_identity


def _data(seed: int = 0, n: int = 200):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def _batches(x, y, size: int = 64):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _last_bits(x: torch.Tensor, every: int = 3) -> torch.Tensor:
    """x with one value in ``every`` moved by one ulp (what another CPU's kernels leave)."""
    mask = (torch.arange(x.numel()) % every == 0).reshape(x.shape)
    return torch.where(mask, torch.nextafter(x, torch.full_like(x, 1e9)), x)


def test_last_bit_differences_match_and_real_changes_do_not():
    x, y = _data()
    reference = batches_fingerprint(_batches(x, y))
    assert fingerprints_match(reference, batches_fingerprint(_batches(_last_bits(x), y)))
    assert fingerprints_match(reference, json.loads(json.dumps(reference)))  # survives a baseline file
    swapped = x.clone()
    swapped[[3, 4]] = x[[4, 3]]
    replaced = x.clone()
    replaced[7] = _data(seed=1, n=1)[0][0]  # one image of 200
    changes = {
        "another seed": _batches(*_data(seed=1)),
        "two images swapped": _batches(swapped, y),
        "one image replaced": _batches(replaced, y),
        "brightness +0.1 %": _batches(x * 1.001, y),
        "labels rolled": _batches(x, y.roll(1)),
        "one image fewer": _batches(x[:-1], y[:-1]),
        "other batching": _batches(x, y, size=50),
    }
    for name, batches in changes.items():
        assert not fingerprints_match(reference, batches_fingerprint(batches)), name


def test_state_dict_fingerprint_tolerates_rounding_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    reference = state_dict_fingerprint(model)
    with torch.no_grad():
        model[0].weight.copy_(_last_bits(model[0].weight))
    assert fingerprints_match(reference, state_dict_fingerprint(model))
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 0.05  # one weight retrained
    assert not fingerprints_match(reference, state_dict_fingerprint(model))
    model[1].num_batches_tracked += 1  # an integer buffer: exact
    assert not fingerprints_match(state_dict_fingerprint(model), reference)


def test_a_moved_digest_with_matching_fingerprints_is_not_a_change():
    x, y = _data()
    digest, fingerprint = split_identity(_batches(x, y))
    digest_r, fingerprint_r = split_identity(_batches(_last_bits(x), y))
    assert digest != digest_r  # bit-exact digests see the last bits
    stored = {"data": {"evaluation": digest, "fingerprints": {"evaluation": fingerprint}}}
    rounded = {"data": {"evaluation": digest_r, "fingerprints": {"evaluation": fingerprint_r}}}
    assert data_change(stored, rounded) is None
    assert "last bits only" in explain_changes(stored, rounded)
    other = split_identity(_batches(*_data(seed=1)))
    assert data_change(stored, {"data": {"evaluation": other[0], "fingerprints": {"evaluation": other[1]}}})
    # a baseline written before fingerprints keeps the bit-exact rule
    assert data_change({"data": {"evaluation": digest}}, rounded)
    model = {"digest": "a", "fingerprint": state_dict_fingerprint(torch.nn.Linear(2, 2))}
    assert dense_model_change({"dense_model": model}, {"dense_model": {**model, "digest": "b"}}) is None


_DRAW = """
import json, torch
from pytest_prune.pipeline.provenance import split_identity
from pytest_prune.pipeline.fingerprint import state_dict_fingerprint
g = torch.Generator().manual_seed(0)
x, y = torch.randn(160, 3, 32, 32, generator=g), torch.randint(0, 10, (160,), generator=g)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.Linear(16, 10))
digest, fingerprint = split_identity([(x[:100], y[:100]), (x[100:], y[100:])])
print(json.dumps({"digest": digest, "data": fingerprint, "model": state_dict_fingerprint(model),
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def test_seeded_randn_and_default_init_match_across_cpu_capabilities():
    """The case that made baselines fail on another CPU: ``torch.randn`` data and a seeded default
    initialisation, drawn with vectorised kernels and with ``ATEN_CPU_CAPABILITY=default``."""
    def draw(**env):
        out = subprocess.run([sys.executable, "-c", _DRAW], capture_output=True, text=True, check=True,
                             env={**os.environ, **env})
        return json.loads(out.stdout)

    native, scalar = draw(), draw(ATEN_CPU_CAPABILITY="default")
    assert scalar["capability"] == "DEFAULT"
    assert fingerprints_match(native["data"], scalar["data"])
    assert fingerprints_match(native["model"], scalar["model"])
    if native["capability"] != "DEFAULT":  # where the kernels differ, the bit-exact digests do too
        assert native["digest"] != scalar["digest"]


def test_a_small_change_to_one_small_tensor_is_seen_beside_a_large_model():
    """A nudge that is nothing beside the model's norm (the planted regression's 1e-3 on 10 bias
    values of LeNet-5's classifier) still changes the fingerprint; two tensors swapped too."""
    from pytest_prune.models import build_model

    model = build_model("lenet5").model
    reference = state_dict_fingerprint(model)
    with torch.no_grad():
        model.classifier[5].bias += 1e-3
    assert not fingerprints_match(reference, state_dict_fingerprint(model))
    with torch.no_grad():
        model.classifier[5].bias -= 1e-3
    twins = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    before = state_dict_fingerprint(twins)
    with torch.no_grad():
        a = twins[0].weight.clone()
        twins[0].weight.copy_(twins[1].weight)
        twins[1].weight.copy_(a)
    assert not fingerprints_match(before, state_dict_fingerprint(twins))
