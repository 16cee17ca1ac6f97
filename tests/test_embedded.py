"""The embedded LeNet-5: accurate, bitwise repeatable, cached, and recovering from a bad cache."""

import pytest
import torch

from pytest_prune import embedded
from pytest_prune.data import load_data
from pytest_prune.models.lenet5 import LeNet5


@pytest.fixture(scope="module")
def trained() -> dict[str, torch.Tensor]:
    return embedded.trained_lenet5(cache_dir=None)


@pytest.fixture
def counted_trainer(trained, monkeypatch) -> list:
    """Replace training by a call counter that returns the module's trained weights."""
    calls = []

    def fake_train(recipe):
        calls.append(recipe)
        return {name: tensor.clone() for name, tensor in trained.items()}

    monkeypatch.setattr(embedded, "_train_lenet5", fake_train)
    return calls


def test_reaches_95_percent_held_out_top1(trained):
    model = LeNet5()
    model.load_state_dict(trained)
    assert embedded._top1(model, load_data("digits").evaluation) >= 0.95


def test_training_is_bitwise_repeatable_and_leaves_global_state_alone(trained):
    threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    again = embedded._train_lenet5(embedded.RECIPE)
    assert again.keys() == trained.keys()
    assert all(torch.equal(again[name], trained[name]) for name in trained)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_second_call_loads_the_cache_instead_of_training(tmp_path, counted_trainer, trained):
    first = embedded.trained_lenet5(tmp_path)
    second = embedded.trained_lenet5(tmp_path)
    assert len(counted_trainer) == 1
    assert all(torch.equal(second[name], trained[name]) for name in trained)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert [p.name for p in tmp_path.iterdir()] == [embedded.cache_file(tmp_path).name]  # no temp files left


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage, not a torch file", "a valid file holding the wrong weights"],
    ids=["empty", "garbage", "wrong-weights"],
)
def test_bad_cache_file_is_retrained_and_overwritten(tmp_path, counted_trainer, trained, content):
    path = embedded.cache_file(tmp_path)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save({"conv.weight": torch.zeros(3)}, path)
    state = embedded.trained_lenet5(tmp_path)
    assert len(counted_trainer) == 1
    assert all(torch.equal(state[name], trained[name]) for name in trained)
    reloaded = torch.load(path, weights_only=True)
    assert all(torch.equal(reloaded[name], trained[name]) for name in trained)


def test_cache_name_hashes_the_recipe_including_the_torch_version(tmp_path):
    name = embedded.cache_file(tmp_path).name
    assert name.startswith("lenet5-digits-") and name.endswith(".pt")
    assert embedded.RECIPE["torch"] == ".".join(torch.__version__.split(".")[:2])
    assert embedded.RECIPE["split"]["split_seed"] == 2020  # the data split is part of the key
    for key, other in [("epochs", 16), ("torch", "0.1"), ("seed", 1)]:
        changed = dict(embedded.RECIPE, **{key: other})
        assert embedded.recipe_hash(changed) != embedded.recipe_hash()
    reordered = dict(reversed(list(embedded.RECIPE.items())))
    assert embedded.recipe_hash(reordered) == embedded.recipe_hash()
