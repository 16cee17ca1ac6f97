"""Model specs and weight loading: the zoo, torchvision by name, user factories, safe loading."""

import sys

import pytest
import torch
from torch import nn

from pytest_prune.errors import SpecError, WeightsError
from pytest_prune.models import build_model, load_model
from pytest_prune.models.loading import read_state_dict


class Pickled(nn.Module):  # a whole module, saved as a full pickle
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)


def test_zoo_models_build_with_their_default_data():
    assert build_model("lenet5").default_data == "digits"
    assert build_model("lenet5-colour").input_shape == (3, 32, 32)
    info = build_model("cifar-resnet110")
    assert info.default_data == "cifar10"
    # He et al. 2016, table 6: ResNet-110 has 1.7 M parameters
    assert sum(p.numel() for p in info.model.parameters()) == pytest.approx(1.7e6, abs=0.05e6)


def test_torchvision_models_by_name_are_random_and_repeatable():
    a, b = build_model("torchvision:resnet18"), build_model("torchvision:resnet18")
    assert a.name == "torchvision-resnet18" and a.input_shape == (3, 224, 224)
    assert torch.equal(a.model.conv1.weight, b.model.conv1.weight)
    with pytest.raises(SpecError, match="no classification model 'resnet9000'"):
        build_model("torchvision:resnet9000")


def test_user_factory_and_unknown_specs(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n"
        "def tiny():\n"
        "    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))\n"
        "    m.input_shape = (3, 8, 8); m.num_classes = 2\n"
        "    return m\n"
        "def not_a_model():\n"
        "    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    info = build_model("my_models:tiny")
    assert info.name == "my_models.tiny" and info.input_shape == (3, 8, 8) and info.num_classes == 2
    with pytest.raises(SpecError, match="returned int, not an nn.Module"):
        build_model("my_models:not_a_model")
    with pytest.raises(SpecError, match="cannot import module 'no_such_module'"):
        build_model("no_such_module:f")
    with pytest.raises(SpecError, match="is not a known model"):
        build_model("lenet6")
    sys.modules.pop("my_models", None)


def test_weights_load_strictly_with_the_data_parallel_prefix_stripped(tmp_path):
    source = build_model("lenet5").model
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    info = load_model("lenet5", str(path))
    assert all(torch.equal(a, b) for a, b in zip(info.model.state_dict().values(), source.state_dict().values()))
    with pytest.raises(WeightsError, match="does not fit the model"):
        load_model("cifar-resnet20", str(path))


def test_full_pickles_are_refused_unless_allowed(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(Pickled(), path)
    with pytest.raises(WeightsError, match="--prune-allow-pickle"):
        read_state_dict(path)
    state = read_state_dict(path, allow_pickle=True)  # the user trusts this file
    assert set(state) == {"fc.weight", "fc.bias"}


def test_missing_and_truncated_weight_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")
    path = tmp_path / "cut.pt"
    torch.save(build_model("lenet5").model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        read_state_dict(path)


def test_torchvision_weights_trained_on_other_classes_set_the_head(tmp_path):
    """A torchvision resnet18 trained on CIFAR-10 has a 10-way fc: ``torchvision:resnet18`` with its
    weights is built with 10 classes (and loads them exactly), not refused for the 1000-way head."""
    import torchvision

    trained = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "r18 cifar.pth"
    torch.save(trained.state_dict(), path)
    info = load_model("torchvision:resnet18", str(path))
    assert info.num_classes == 10 and info.model.fc.out_features == 10
    assert torch.equal(info.model.fc.weight, trained.fc.weight)
    assert build_model("torchvision:resnet18").num_classes == 1000  # without weights: ImageNet's head


def test_weights_of_another_architecture_name_the_first_mismatches(tmp_path):
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(WeightsError) as err:
        load_model("torchvision:resnet34", str(path))
    message = str(err.value)
    assert "Missing key(s) in state_dict: layer1.2.conv1.weight" in message and "(80 in all)" in message
    assert len(message) < 400 and "another --prune-model" in message
