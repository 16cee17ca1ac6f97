"""``cifar10`` / ``cifar10-jpeg`` on tiny files in the real format, plus one test on the real data."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_prune.data import cifar10, load_data
from pytest_prune.data.cifar10 import MEAN, STD
from pytest_prune.errors import DataError

# One flat colour per image: JPEG reproduces flat colours almost exactly, so pixel values are known.
TRAIN_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (255, 255, 255), (10, 200, 90)]
TEST_COLOURS = [(0, 0, 0), (200, 30, 60), (40, 40, 220)]


def _jpeg_arrays(colours):
    encoded = []
    for colour in colours:
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG", quality=95)
        encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
    return np.concatenate(encoded), offsets, np.arange(len(colours), dtype=np.int64) % 10


def _normalised(colour):
    return (torch.as_tensor(colour, dtype=torch.float32) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    train_jpeg, train_offsets, train_labels = _jpeg_arrays(TRAIN_COLOURS)
    test_jpeg, test_offsets, test_labels = _jpeg_arrays(TEST_COLOURS)
    np.savez(
        tmp_path / "cifar10-jpeg.npz",
        train_jpeg=train_jpeg, train_offsets=train_offsets, train_labels=train_labels,
        test_jpeg=test_jpeg, test_offsets=test_offsets, test_labels=test_labels,
        classes=np.array([f"class{i}" for i in range(10)]),
    )
    exact = np.random.RandomState(0).randint(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1], dtype=np.int64)
    np.savez(tmp_path / "cifar10-test-exact932.npz", x=exact, y=labels, y_all_10000=labels)
    return tmp_path


def test_cifar10_trains_on_jpeg_train_and_evaluates_on_exact_pixels(cifar_dir):
    bundle = load_data(f"cifar10:{cifar_dir}", input_shape=(3, 32, 32))
    assert bundle.name == "cifar10" and bundle.num_classes == 10 and bundle.input_shape == (3, 32, 32)
    assert (len(bundle.train), len(bundle.evaluation)) == (len(TRAIN_COLOURS), 4)
    for index, colour in enumerate(TRAIN_COLOURS):
        image, label = bundle.train[index]
        assert image.shape == (3, 32, 32) and label == index
        # RGB order, [0, 1] scaling and the per-channel statistics, within JPEG's rounding
        assert torch.allclose(image.mean(dim=(1, 2)), _normalised(colour), atol=0.04)
    exact = np.load(cifar_dir / "cifar10-test-exact932.npz")["x"]
    image, label = bundle.evaluation[2]
    assert label == 4
    assert torch.allclose(image, _normalised(torch.from_numpy(exact[2]).float()).movedim(-1, 0), atol=1e-5)


def test_cifar10_jpeg_evaluates_on_the_jpeg_test_split(cifar_dir):
    bundle = load_data(f"cifar10-jpeg:{cifar_dir}")
    assert bundle.name == "cifar10-jpeg" and len(bundle.evaluation) == len(TEST_COLOURS)
    image, label = bundle.evaluation[1]
    assert label == 1
    assert torch.allclose(image.mean(dim=(1, 2)), _normalised(TEST_COLOURS[1]), atol=0.04)


def test_bare_cifar10_reads_the_folder_named_by_the_environment(cifar_dir, monkeypatch):
    monkeypatch.setenv("PRUNE_CIFAR10_DIR", str(cifar_dir))
    assert len(load_data("cifar10").train) == len(TRAIN_COLOURS)


def test_bare_cifar10_defaults_to_shared_data_beside_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("PRUNE_CIFAR10_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cifar10.default_cifar10_dir().resolve() == (tmp_path.parent / "shared" / "data" / "cifar10").resolve()


def test_images_are_decoded_only_when_read(cifar_dir, monkeypatch):
    decoded = []
    real_decode = cifar10.decode_jpeg
    monkeypatch.setattr(cifar10, "decode_jpeg", lambda data, what: decoded.append(what) or real_decode(data, what))
    bundle = load_data(f"cifar10:{cifar_dir}")
    assert decoded == []
    bundle.train[3]
    assert len(decoded) == 1


def test_calibration_is_a_fixed_train_subset_capped_at_the_train_size(cifar_dir):
    bundle = load_data(f"cifar10:{cifar_dir}", seed=5)
    assert sorted(bundle.calibration.indices) == list(range(len(TRAIN_COLOURS)))
    assert bundle.calibration.dataset is bundle.train
    small = load_data(f"cifar10:{cifar_dir}", calibration_size=2)
    assert small.calibration.indices == bundle.calibration.indices[:2]
    x, y = small.calibration_batches()[0]
    assert x.shape == (2, 3, 32, 32) and y.dtype == torch.int64


def test_missing_folder_names_the_path_and_where_data_is_expected(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="PRUNE_CIFAR10_DIR") as error:
        load_data(f"cifar10:{missing}")
    assert str(missing) in str(error.value) and "cifar10-jpeg.npz" in str(error.value)
    monkeypatch.setenv("PRUNE_CIFAR10_DIR", str(missing))
    with pytest.raises(DataError, match="does not exist"):
        load_data("cifar10")


def test_missing_exact_file_is_named(cifar_dir):
    (cifar_dir / "cifar10-test-exact932.npz").unlink()
    with pytest.raises(DataError, match="cifar10-test-exact932.npz.*does not exist"):
        load_data(f"cifar10:{cifar_dir}")
    assert len(load_data(f"cifar10-jpeg:{cifar_dir}").evaluation) == len(TEST_COLOURS)  # does not need it


def test_archive_without_the_expected_arrays_says_what_it_has(cifar_dir):
    np.savez(cifar_dir / "cifar10-jpeg.npz", images=np.zeros(3))
    with pytest.raises(DataError, match=r"lacks train_jpeg.*it has images"):
        load_data(f"cifar10:{cifar_dir}")


def test_corrupt_archive_is_a_data_error(cifar_dir):
    (cifar_dir / "cifar10-jpeg.npz").write_bytes(b"not an archive at all")
    with pytest.raises(DataError, match="cannot be read as an .npz archive"):
        load_data(f"cifar10:{cifar_dir}")


def test_offsets_that_do_not_fit_the_labels_are_a_data_error(cifar_dir):
    jpeg, offsets, labels = _jpeg_arrays(TRAIN_COLOURS)
    np.savez(cifar_dir / "cifar10-jpeg.npz", train_jpeg=jpeg, train_offsets=offsets[:-1], train_labels=labels)
    with pytest.raises(DataError, match="do not fit together"):
        load_data(f"cifar10:{cifar_dir}")


def test_corrupt_jpeg_bytes_name_the_image(cifar_dir):
    jpeg, offsets, labels = _jpeg_arrays(TRAIN_COLOURS)
    jpeg[offsets[1] : offsets[2]] = 7  # image 1 overwritten with junk
    np.savez(cifar_dir / "cifar10-jpeg.npz", train_jpeg=jpeg, train_offsets=offsets, train_labels=labels)
    bundle = load_data(f"cifar10:{cifar_dir}")
    with pytest.raises(DataError, match="image 1 of .*not a readable JPEG"):
        bundle.train[1]


def _real_cifar10_dir() -> Path:
    configured = os.environ.get("PRUNE_CIFAR10_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"


def test_real_cifar10_when_available():
    directory = _real_cifar10_dir()
    if not (directory / "cifar10-jpeg.npz").is_file() or not (directory / "cifar10-test-exact932.npz").is_file():
        pytest.skip(f"real CIFAR-10 files not found in {directory} (set PRUNE_CIFAR10_DIR to run this test)")
    bundle = load_data(f"cifar10:{directory}", input_shape=(3, 32, 32))
    assert len(bundle.evaluation) == 932 and len(bundle.train) == 50_000 and len(bundle.calibration) == 2048
    labels = bundle.evaluation.labels
    assert int(labels.min()) == 0 and int(labels.max()) == 9 and len(labels.unique()) == 10
    images = bundle.evaluation.images
    assert images.mean(dim=(0, 2, 3)).abs().max() < 0.5
    assert ((images.std(dim=(0, 2, 3)) - 1).abs() < 0.3).all()
    x, y = bundle.calibration_batches(count=64)[0]
    assert x.shape == (64, 3, 32, 32) and 0 <= int(y.min()) and int(y.max()) <= 9
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.5
