"""``package.module:callable``: every supported return form, and a clear DataError for bad ones."""

import pytest
import torch

from pytest_prune.data import DataBundle, load_data
from pytest_prune.data.loader_split import LoaderSplit
from pytest_prune.errors import DataError, SpecError

_FACTORIES = '''
import torch
from torch.utils.data import DataLoader, TensorDataset
from pytest_prune.data import DataBundle
from pytest_prune.data.samples import TensorSamples

def images(n, shape=(3, 8, 8)):
    return torch.randn((n,) + shape, generator=torch.Generator().manual_seed(n))

def labels(n):
    return torch.arange(n) % 4

def pair():
    return images(20), labels(20)

def loader():
    return DataLoader(TensorDataset(images(20), labels(20)), batch_size=6)

def splits():
    return {"train": loader(), "eval": (images(7), labels(7))}

def splits_with_calibration():
    return {"train": pair(), "eval": pair(), "calibration": (images(5), labels(5))}

def bundle():
    data = TensorSamples(images(10), labels(10))
    return DataBundle("mine", data, data, data, num_classes=4, input_shape=(3, 8, 8))

class Factories:
    make = staticmethod(pair)

def uint8_images():
    return torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels(4)

def unbatched_images():
    return torch.zeros(3, 8, 8), labels(3)

def float_labels():
    return images(4), labels(4).float()

def short_labels():
    return images(4), labels(3)

def negative_labels():
    return images(4), -labels(4) - 1

def a_string():
    return "data.csv"

def bad_keys():
    return {"train": pair(), "test": pair()}

def dict_batches():
    return DataLoader([{"x": torch.zeros(3, 8, 8), "y": 0}] * 4, batch_size=2)

def mixed_shapes():
    return {"train": pair(), "eval": (images(4, (3, 9, 9)), labels(4))}

def bundle_with_wrong_shape():
    data = TensorSamples(images(10), labels(10))
    return DataBundle("mine", data, data, data, num_classes=4, input_shape=(1, 8, 8))

def bundle_with_label_out_of_range():
    data = TensorSamples(images(10), labels(10) + 7)
    return DataBundle("mine", data, data, data, num_classes=4, input_shape=(3, 8, 8))

not_callable = 3
'''

@pytest.fixture
def module(factories_module) -> str:
    """The name of a fresh, importable module holding the factories above."""
    return factories_module(_FACTORIES, "prune_user_data")


def test_pair_is_used_as_every_split(module):
    bundle = load_data(f"{module}:pair", input_shape=(3, 8, 8))
    assert isinstance(bundle, DataBundle) and bundle.name == f"{module}:pair"
    assert len(bundle.train) == len(bundle.evaluation) == len(bundle.calibration) == 20
    assert bundle.num_classes == 4 and bundle.input_shape == (3, 8, 8)
    image, label = bundle.evaluation[5]
    assert image.shape == (3, 8, 8) and label == 1


def test_loader_is_streamed_in_order(module):
    bundle = load_data(f"{module}:loader")
    assert isinstance(bundle.evaluation, LoaderSplit) and len(bundle.evaluation) == 20
    labels = torch.cat([y for _, y in bundle.loader("evaluation", batch_size=8)])
    assert labels.tolist() == (torch.arange(20) % 4).tolist()


def test_dict_keeps_train_and_eval_apart_and_calibrates_on_the_first_train_samples(module):
    bundle = load_data(f"{module}:splits", calibration_size=8)
    assert (len(bundle.train), len(bundle.evaluation), len(bundle.calibration)) == (20, 7, 8)
    calibration = bundle.calibration_batches()
    train_images = next(iter(bundle.loader("train", batch_size=8)))[0]
    assert torch.equal(torch.cat([x for x, _ in calibration]), train_images)


def test_dict_calibration_entry_is_used(module):
    bundle = load_data(f"{module}:splits_with_calibration")
    assert len(bundle.calibration) == 5
    assert len(load_data(f"{module}:splits_with_calibration", calibration_size=2).calibration) == 2


def test_bundle_is_returned_as_it_is(module):
    bundle = load_data(f"{module}:bundle", input_shape=(3, 8, 8))
    assert bundle.name == "mine" and len(bundle.evaluation) == 10
    assert len(load_data(f"{module}:bundle", calibration_size=3).calibration) == 3


def test_dotted_attribute_path_reaches_a_class_attribute(module):
    assert len(load_data(f"{module}:Factories.make").train) == 20


BAD_FORMS = [
    ("uint8_images", r"x is a torch.uint8 tensor .*expected a float tensor N×C×H×W.*x.float\(\) / 255"),
    ("unbatched_images", r"x has shape \(3, 8, 8\); expected N×C×H×W.*unsqueeze"),
    ("float_labels", r"y is a torch.float32 tensor.*expected integer class indices.*y.long\(\)"),
    ("short_labels", r"y has shape \(3,\) for 4 images; expected one class index per image, shape \(4,\)"),
    ("negative_labels", r"negative labels"),
    ("a_string", r"the value it returned is a str; expected .*DataBundle.*DataLoader.*\(x, y\) tensor pair"),
    ("bad_keys", r"keys \['test', 'train'\]; expected 'train' and 'eval'"),
    ("dict_batches", r"batch 0 is a dict; expected an \(x, y\) pair"),
    ("mixed_shapes", r"splits hold images of different shapes \(train 3x8x8, eval 3x9x9\)"),
    ("bundle_with_wrong_shape", r"train split yields images that are a torch.float32 tensor of shape \(3, 8, 8\)"),
    ("bundle_with_label_out_of_range", r"yields label 7; expected an int class index from 0 to .* 3"),
]


@pytest.mark.parametrize("factory, message", BAD_FORMS, ids=[factory for factory, _ in BAD_FORMS])
def test_bad_forms_say_what_was_found_and_what_is_expected(module, factory, message):
    with pytest.raises(DataError, match=message) as error:
        load_data(f"{module}:{factory}")
    assert f"{module}:{factory}" in str(error.value)  # the message names the input


def test_data_of_another_shape_than_the_model_is_refused(module):
    with pytest.raises(DataError, match=r"samples of shape 3x8x8 .* model expects 1x32x32"):
        load_data(f"{module}:pair", input_shape=(1, 32, 32))


def test_unimportable_module_and_missing_callable_are_spec_errors(module):
    with pytest.raises(SpecError, match="cannot import module 'no_such_module_here'.*pythonpath"):
        load_data("no_such_module_here:make")
    with pytest.raises(SpecError, match="has no callable named 'missing'"):
        load_data(f"{module}:missing")
    with pytest.raises(SpecError, match="has no callable named 'not_callable'"):
        load_data(f"{module}:not_callable")
