"""decompose_model on LeNet-5 and a CIFAR ResNet-20: shapes kept, counts adding up, reasons given."""

import pytest
import torch
from torch import nn

from pytest_prune.decompose import (
    HIGH_DIMENSIONAL_WEIGHTS,
    DecompositionError,
    DecompositionReport,
    decompose_model,
    is_high_dimensional,
)
from pytest_prune.measure.macs import count_model
from pytest_prune.models import build_model
from pytest_prune.models.lenet5 import LeNet5


def seeded_input(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def assert_report_adds_up(old: nn.Module, new: nn.Module, report: DecompositionReport, x: torch.Tensor):
    convs = {name: m for name, m in old.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}
    assert [layer.name for layer in report.layers] == list(convs)
    before, after = count_model(old, x), count_model(new, x)
    by_layer = before.by_layer()
    # Each layer's "before" is what the counter says of the original conv ...
    for layer in report.layers:
        counted = by_layer[layer.name]
        assert (layer.params_before, layer.macs_before) == (counted.params, counted.macs)
        assert tuple(convs[layer.name].weight.shape) == layer.shape
    # ... and the whole model changes by exactly what the report says it saved.
    assert after.params == before.params - report.params_before + report.params_after
    assert after.macs == before.macs - report.macs_before + report.macs_after
    for layer in report.layers:
        replaced = new.get_submodule(layer.name)
        if layer.decision == "decomposed":
            assert isinstance(replaced, nn.Sequential) and [type(m) for m in replaced] == [nn.Conv2d] * 3
            assert layer.params_after < layer.params_before and layer.macs_after < layer.macs_before
            assert sum(p.numel() for p in replaced.parameters()) == layer.params_after
        else:
            assert replaced.__class__ is convs[layer.name].__class__
            assert (layer.params_after, layer.macs_after) == (layer.params_before, layer.macs_before)
        assert layer.reason


@pytest.mark.parametrize("rule, value", [("fraction", 0.5), ("energy", 0.9), ("vbmf", None)])
def test_lenet5(rule, value):
    model = LeNet5().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = seeded_input(2, 1, 32, 32)
    new, report = decompose_model(model, x, ranks=rule, value=value)
    assert (report.rule, report.value) == (rule, value if value is not None else None)
    assert new(x).shape == model(x).shape == (2, 10)
    assert_report_adds_up(model, new, report, x)
    assert report.decomposed  # at least conv2 (2416 weights) gains at every rule here
    assert all(f"{layer.name} {layer.shape}: {layer.decision}" in report.summary() for layer in report.layers)
    # The original is untouched, training mode included.
    assert model.training and new.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_cifar_resnet20_with_the_high_dimensional_split():
    model = build_model("cifar-resnet20").model.eval()
    x = seeded_input(2, 3, 32, 32)
    new, report = decompose_model(
        model, x, ranks="fraction", value=0.5, threshold=HIGH_DIMENSIONAL_WEIGHTS
    )
    assert new(x).shape == model(x).shape == (2, 10)
    assert_report_adds_up(model, new, report, x)
    # The stem (3·16·3·3 = 432 weights) is low-dimensional; all 18 block convs are decomposed.
    stem = report.layers[0]
    assert (stem.name, stem.decision) == ("conv1", "skipped") and "low-dimensional" in stem.reason
    assert len(report.decomposed) == 18
    assert report.params_after < report.params_before / 2


def test_full_rank_would_grow_so_every_conv_is_left_alone_with_the_reason():
    model = LeNet5().eval()
    x = seeded_input(1, 1, 32, 32)
    new, report = decompose_model(model, x, ranks="fraction", value=1.0)
    assert report.decomposed == []
    for layer in report.layers:
        assert layer.decision == "kept" and "would not reduce parameters" in layer.reason
        assert layer.ranks == (layer.shape[0], layer.shape[1])
    with torch.no_grad():
        assert torch.equal(new(x), model(x))


def test_a_layer_that_would_be_slower_but_smaller_is_left_alone():
    # Stride 3: the first 1x1 conv of the cascade runs on 9x as many positions as the conv.
    # Ranks (14, 14): parameters 16·14 + 14·14·9 + 14·16 + 16 = 2228 < 2320, but MACs per output
    # position 9·16·14 + 14·14·9 + 14·16 = 4004 > 2304.
    model = nn.Sequential(nn.Conv2d(16, 16, 3, stride=3))
    x = seeded_input(1, 16, 12, 12)
    _new, report = decompose_model(model, x, ranks="fraction", value=14 / 16)
    (layer,) = report.layers
    assert layer.decision == "kept" and layer.ranks == (14, 14)
    assert "MACs" in layer.reason and "parameters" not in layer.reason


class WithAnUnusedConv(nn.Sequential):
    def __init__(self, *layers: nn.Module):
        super().__init__(*layers)
        self.unused = nn.Conv2d(16, 16, 3)

    def forward(self, x):
        for name, layer in self.named_children():
            if name != "unused":
                x = layer(x)
        return x


def test_grouped_depthwise_pointwise_unused_and_named_convs_are_skipped_with_a_reason():
    model = WithAnUnusedConv(
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 16, 1),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.Conv2d(16, 16, 3, padding=1),
    )
    x = seeded_input(1, 8, 8, 8)
    new, report = decompose_model(model, x, skip=["4"])
    reasons = {layer.name: (layer.decision, layer.reason) for layer in report.layers}
    assert reasons["0"][0] == "skipped" and "grouped conv (groups=2)" in reasons["0"][1]
    assert reasons["1"][0] == "skipped" and "depthwise conv (groups=8)" in reasons["1"][1]
    assert reasons["2"][0] == "skipped" and "1x1 conv" in reasons["2"][1]
    assert reasons["3"][0] == "decomposed"
    assert reasons["4"] == ("skipped", "named in skip")
    assert reasons["unused"][0] == "skipped" and "not called" in reasons["unused"][1]
    assert_report_adds_up(model, new, report, x)


def test_bad_skip_names_and_rules_are_refused():
    model = LeNet5()
    x = seeded_input(1, 1, 32, 32)
    with pytest.raises(DecompositionError, match="'features.1'.*conv names: features.0, features.3"):
        decompose_model(model, x, skip=["features.1"])
    with pytest.raises(DecompositionError, match="unknown rank rule 'cp'"):
        decompose_model(model, x, ranks="cp")


def test_a_model_that_is_one_conv():
    conv = nn.Conv2d(8, 8, 3)
    new, report = decompose_model(conv, seeded_input(1, 8, 6, 6), ranks="fraction", value=0.25)
    assert isinstance(new, nn.Sequential) and report.decomposed == [""]


@pytest.mark.parametrize(
    "conv, threshold, min_channels, expected",
    [
        (nn.Conv2d(6, 16, 5), HIGH_DIMENSIONAL_WEIGHTS, 1, True),  # LeNet-5 conv2: 2400 weights
        (nn.Conv2d(1, 6, 5), HIGH_DIMENSIONAL_WEIGHTS, 1, False),  # LeNet-5 conv1: 150
        (nn.Conv2d(3, 16, 3), HIGH_DIMENSIONAL_WEIGHTS, 1, False),  # CIFAR ResNet stem: 432
        (nn.Conv2d(16, 16, 3), HIGH_DIMENSIONAL_WEIGHTS, 1, True),  # 2304
        (nn.Conv2d(3, 512, 7), HIGH_DIMENSIONAL_WEIGHTS, 16, False),  # many weights, few input channels
        (nn.Conv2d(16, 16, 3), 0, 16, True),
    ],
)
def test_is_high_dimensional(conv, threshold, min_channels, expected):
    assert is_high_dimensional(conv, threshold, min_channels) is expected
