import torch
from torch import nn

from pytest_prune.measure import count_model
from pytest_prune.models import build_model


def test_conv_grouped_and_linear_macs_by_formula():
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),  # 8*8*8 outputs * 4*9
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=1, groups=4),  # 8*8*8 * 2*9
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise: 8*8*8 * 9
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),  # 5 * 8
    )
    count = count_model(model, torch.zeros(3, 4, 8, 8))
    layers = count.by_layer()
    assert layers["0"].macs == 512 * 36
    assert layers["2"].macs == 512 * 18
    assert layers["3"].macs == 512 * 9
    assert layers["6"].macs == 40
    assert layers["1"].macs == 0 and layers["1"].params == 16
    assert count.macs == 512 * 63 + 40
    assert count.params == sum(p.numel() for p in model.parameters())


def test_published_sizes_of_zoo_models():
    # He et al. 2016: ResNet-56 has 0.85 M parameters and about 125 M MACs on 32x32 inputs.
    info = build_model("cifar-resnet56")
    count = count_model(info.model, info.example_input(1))
    assert count.params == 853_018
    assert 124e6 < count.macs < 126e6
    lenet = build_model("lenet5")
    assert count_model(lenet.model, lenet.example_input(1)).params == 61_706


def test_counting_keeps_the_mode():
    info = build_model("lenet5")
    info.model.train()
    count_model(info.model, info.example_input(1))
    assert info.model.training
