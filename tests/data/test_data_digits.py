"""``digits``: shapes, normalisation, and a split that never moves."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from pytest_prune.data import load_data
from pytest_prune.data.digits import digits_split
from pytest_prune.errors import DataError


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_samples_are_normalised_grey_32x32_images_with_int_labels(digits):
    image, label = digits.evaluation[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10
    assert digits.input_shape == (1, 32, 32) and digits.num_classes == 10
    assert digits.name == "digits"


def test_train_split_has_zero_mean_and_unit_std(digits):
    images = digits.train.images
    assert abs(float(images.mean())) < 1e-4
    assert abs(float(images.std()) - 1) < 1e-4
    # the held-out split is normalised with the train statistics, so it is close but not exact
    assert abs(float(digits.evaluation.images.mean())) < 0.1


def test_split_is_an_80_20_stratified_partition_of_all_1797_digits():
    labels = load_digits().target
    train, held_out = digits_split(labels)
    assert len(np.intersect1d(train, held_out)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, held_out])), np.arange(1797))
    assert 0.19 < len(held_out) / 1797 < 0.21
    for label in range(10):
        share = np.sum(labels[held_out] == label) / np.sum(labels == label)
        assert 0.18 < share < 0.22


def test_split_and_calibration_do_not_depend_on_the_seed(digits):
    other = load_data("digits", seed=123)
    assert torch.equal(other.evaluation.images, digits.evaluation.images)
    assert torch.equal(other.evaluation.labels, digits.evaluation.labels)
    assert other.calibration.indices == digits.calibration.indices


def test_no_held_out_image_appears_in_train(digits):
    train = digits.train.images.flatten(1)
    held_out = digits.evaluation.images.flatten(1)
    # 8x8 digits can repeat pixel for pixel across the dataset; almost none should straddle the split
    duplicates = (torch.cdist(held_out, train) < 1e-6).any(dim=1).sum()
    assert duplicates <= 2


def test_calibration_is_a_fixed_subset_of_train_and_smaller_sizes_are_prefixes(digits):
    assert len(digits.calibration) == 256
    assert len(set(digits.calibration.indices)) == 256
    assert digits.calibration.dataset is digits.train
    small = load_data("digits", calibration_size=100)
    assert small.calibration.indices == digits.calibration.indices[:100]
    batches = small.calibration_batches(batch_size=64)
    assert [len(x) for x, _ in batches] == [64, 36]


@pytest.mark.parametrize("size", [0, 5000, 2.5])
def test_calibration_size_out_of_range_is_a_data_error(size):
    with pytest.raises(DataError, match=r"calibration_size=.*digits.*from 1 to the 1438"):
        load_data("digits", calibration_size=size)


def test_the_digits_read_without_scikit_learn_are_its_loader_s():
    from sklearn.datasets import load_digits

    from pytest_prune.data.digits import digits_arrays

    images, target = digits_arrays()
    raw = load_digits()
    assert np.array_equal(images, raw.images) and np.array_equal(target, raw.target)
    assert images.shape == (1797, 8, 8) and target.dtype == np.int64
