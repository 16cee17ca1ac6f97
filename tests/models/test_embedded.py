"""The embedded defaults: shipped weights, read safely, checked, and remade by their recipe."""

import hashlib

import pytest
import torch

from pytest_prune.data import load_data
from pytest_prune.errors import WeightsError
from pytest_prune.models import build_model, embedded
from pytest_prune.models import lenet5_recipe as recipe
from pytest_prune.models.lenet5 import LeNet5


@pytest.mark.parametrize("name", sorted(embedded.EMBEDDED))
def test_build_loads_the_shipped_weights_bit_for_bit(name):
    info = build_model(name)
    shipped = torch.load(embedded.WEIGHTS_DIR / embedded.EMBEDDED[name], weights_only=True)
    state = info.model.state_dict()
    assert state.keys() == shipped.keys()
    assert all(torch.equal(state[k], shipped[k]) for k in shipped)
    assert info.weights == f"embedded:{embedded.EMBEDDED[name]}"


@pytest.mark.parametrize("name, data", [("lenet5", "digits"), ("lenet5-colour", "colour-digits")])
def test_shipped_weights_reach_the_manifest_top1(name, data):
    """The manifest's held-out top-1 is what the shipped file gives here (a mislabelled or stale
    file would differ by whole samples)."""
    info = build_model(name)
    measured = recipe.top1(info.model, load_data(data).evaluation)
    assert measured == pytest.approx(embedded.manifest()[name]["held_out_top1"], abs=1 / 360 + 1e-9)
    assert measured >= (0.97 if name == "lenet5" else 0.95)


def test_manifest_records_the_recipe_and_digest_of_each_file():
    entries = embedded.manifest()
    assert set(entries) == set(embedded.EMBEDDED)
    for name, entry in entries.items():
        assert entry["recipe"] == recipe.RECIPES[name]
        data = (embedded.WEIGHTS_DIR / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_a_damaged_shipped_file_is_refused_with_the_fix(tmp_path, monkeypatch):
    for name in embedded.EMBEDDED.values():
        (tmp_path / name).write_bytes((embedded.WEIGHTS_DIR / name).read_bytes())
    (tmp_path / embedded.MANIFEST).write_bytes((embedded.WEIGHTS_DIR / embedded.MANIFEST).read_bytes())
    damaged = tmp_path / embedded.EMBEDDED["lenet5"]
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(embedded, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="damaged.*lenet5_recipe --write"):
        embedded.embedded_weights("lenet5")
    assert embedded.embedded_weights("lenet5-colour")  # the intact one still loads


def test_retraining_by_the_recipe_reaches_the_accuracy_floor_and_leaves_global_state_alone():
    """The recipe still makes a good model here (not the identical bits: another CPU's kernels
    converge elsewhere), and training leaves the caller's threads, RNG and determinism as they were."""
    threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    state = recipe.train_lenet5(recipe.RECIPE)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.get_rng_state(), rng_state)
    model = LeNet5()
    model.load_state_dict(state)
    assert recipe.top1(model, load_data("digits").evaluation) >= 0.97


def test_write_command_needs_an_explicit_target(capsys):
    with pytest.raises(SystemExit):
        recipe.main([])
    assert "--write" in capsys.readouterr().err
