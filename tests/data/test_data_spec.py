"""Spec strings: unknown forms, and the check that data fits the model."""

import pytest

from pytest_prune.data import DATA_FORMS, load_data
from pytest_prune.errors import DataError, SpecError


@pytest.mark.parametrize("spec", ["mnist", "cifar100", "not a spec", ""])
def test_unknown_spec_lists_every_form(spec):
    with pytest.raises(SpecError) as error:
        load_data(spec)
    for form in DATA_FORMS:
        assert form in str(error.value)


def test_cifar10_with_an_empty_folder_is_a_spec_error():
    with pytest.raises(SpecError, match="names no folder"):
        load_data("cifar10:")


def test_data_that_does_not_fit_the_model_names_both_shapes():
    with pytest.raises(DataError, match=r"'digits' gives samples of shape 1x32x32 .* model expects 3x32x32"):
        load_data("digits", input_shape=(3, 32, 32))
    assert load_data("synthetic:3x32x32:10", input_shape=(3, 32, 32)).input_shape == (3, 32, 32)
