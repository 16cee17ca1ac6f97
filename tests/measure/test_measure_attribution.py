"""Attribution retention: a model keeps all of its own maps, and little of another model's."""

import copy

import pytest
import torch
from torch import nn

from pytest_prune.errors import SpecError, TraceError
from pytest_prune.measure.attribution import (
    attribution_maps,
    attribution_retention,
    last_conv_name,
    spearman,
    topk_iou,
)
from pytest_prune.models.lenet5 import LeNet5


def lenet(seed: int) -> LeNet5:
    torch.manual_seed(seed)
    return LeNet5()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "gradcam"])
def test_a_model_retains_all_of_its_own_attribution(images, method):
    model = lenet(0)
    result = attribution_retention(model, model, images, method=method, n_steps=8)
    assert result.spearman_mean == pytest.approx(1.0)
    assert result.topk_iou_mean == pytest.approx(1.0)
    assert len(result.spearman) == len(result.topk_iou) == len(images)


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
def test_another_random_init_retains_clearly_less(images, method):
    result = attribution_retention(lenet(0), lenet(1), images, method=method, n_steps=8)
    assert result.spearman_mean < 0.8
    assert result.topk_iou_mean < 0.5


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "gradcam"])
def test_maps_are_deterministic_non_negative_and_input_sized(images, method):
    model = lenet(0)
    first = attribution_maps(model, images, method=method, n_steps=8)
    second = attribution_maps(model, images, method=method, n_steps=8)
    assert first.shape == (len(images), 32, 32)
    assert torch.equal(first, second)
    assert (first >= 0).all()


def test_both_models_explain_the_dense_prediction(images):
    # A logit's bias does not change its gradient: a copy whose bias forces another prediction keeps
    # the dense maps exactly when it explains the dense class, and loses them on its own class.
    dense = lenet(0)
    dense_class = int(dense(images).argmax(1)[0])
    biased = copy.deepcopy(dense)
    with torch.no_grad():
        biased.classifier[-1].bias[(dense_class + 1) % 10] += 1e3
    assert (biased(images).argmax(1) != dense(images).argmax(1)).all()
    retained = attribution_retention(dense, biased, images, method="saliency")
    assert retained.spearman_mean == pytest.approx(1.0)
    assert retained.topk_iou_mean == pytest.approx(1.0)
    own_class = attribution_maps(biased, images, method="saliency")
    assert not torch.equal(own_class, attribution_maps(dense, images, method="saliency"))


def test_modes_and_inputs_are_left_as_they_were(images):
    model = lenet(0).train()
    before = images.clone()
    attribution_maps(model, images, method="saliency")
    assert model.training
    assert torch.equal(images, before) and not images.requires_grad


def test_spearman_known_answers():
    ramp = torch.arange(16.0)
    assert spearman(ramp, ramp * 3 + 1) == pytest.approx(1.0)
    assert spearman(ramp, -ramp) == pytest.approx(-1.0)
    assert spearman(ramp, ramp**3) == pytest.approx(1.0)  # ranks, not values
    assert spearman(torch.ones(16), ramp) == 0.0  # a constant map correlates with nothing


def test_topk_iou_known_answers():
    a = torch.tensor([9.0, 8.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    b = torch.tensor([9.0, 0.0, 0.0, 8.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert topk_iou(a, b, top_k=0.2) == pytest.approx(1 / 3)  # {0,1} vs {0,3}
    assert topk_iou(a, a, top_k=0.3) == 1.0
    with pytest.raises(SpecError, match="top_k"):
        topk_iou(a, b, top_k=0.0)


def test_gradcam_finds_the_last_conv_and_says_when_there_is_none(images):
    assert last_conv_name(lenet(0)) == "features.3"
    with pytest.raises(TraceError, match="no nn.Conv2d"):
        attribution_maps(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10)), images, method="gradcam")


def test_unknown_method_is_named(images):
    with pytest.raises(SpecError, match="'lime'"):
        attribution_maps(lenet(0), images, method="lime")
