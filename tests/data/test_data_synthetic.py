"""``synthetic:CxHxW:K``: seeded noise of the right shape, generated on demand."""

import pytest
import torch

from pytest_prune.data import load_data
from pytest_prune.errors import SpecError


def test_shapes_sizes_and_label_range():
    bundle = load_data("synthetic:3x16x12:7", input_shape=(3, 16, 12))
    assert bundle.input_shape == (3, 16, 12) and bundle.num_classes == 7
    assert (len(bundle.train), len(bundle.calibration), len(bundle.evaluation)) == (128, 64, 64)
    labels = [label for _, label in bundle.evaluation]
    assert all(isinstance(label, int) and 0 <= label < 7 for label in labels)
    assert len(set(labels)) > 1
    x, y = bundle.calibration_batches(count=10)[0]
    assert x.shape == (10, 3, 16, 12) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_same_seed_same_samples_other_seed_other_samples():
    first, again = load_data("synthetic:1x4x4:3", seed=1), load_data("synthetic:1x4x4:3", seed=1)
    assert torch.equal(first.evaluation[10][0], again.evaluation[10][0])
    assert not torch.equal(first.evaluation[10][0], load_data("synthetic:1x4x4:3", seed=2).evaluation[10][0])
    assert not torch.equal(first.evaluation[0][0], first.train[0][0])  # the splits are different draws


def test_a_sample_does_not_depend_on_reading_order():
    bundle = load_data("synthetic:1x4x4:3")
    later = bundle.train[100][0]
    for index in range(5):
        bundle.train[index]
    assert torch.equal(bundle.train[100][0], later)
    with pytest.raises(IndexError):
        bundle.train[128]


@pytest.mark.parametrize(
    "spec", ["synthetic:3x224:10", "synthetic:3x224x224", "synthetic:0x8x8:10", "synthetic:3x8x8:0"]
)
def test_malformed_spec_shows_the_form(spec):
    with pytest.raises(SpecError, match=r"synthetic:CxHxW:K.*synthetic:3x224x224:1000"):
        load_data(spec)
