"""``cifar10`` and ``cifar10-jpeg``: the real CIFAR-10 files kept outside the project.

Two files, both read with ``allow_pickle=False``:

* ``cifar10-jpeg.npz``: all 50,000 train and 10,000 test images as concatenated JPEG bytes plus
  offsets (image i is ``jpeg[off[i]:off[i+1]]``) and labels;
* ``cifar10-test-exact932.npz``: the first 932 official test images, pixel-exact (``x`` uint8 NHWC, ``y``).

Training and calibration always come from the JPEG train split, decoded one image at a time on
``__getitem__`` so that 50,000 images are never decoded up front. Evaluation is on the exact 932
(``cifar10``, for absolute accuracy) or on the 10,000 JPEG test images (``cifar10-jpeg``; JPEG
costs the reference models about 10 points, so compare only against a dense model measured there).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError
from .bundle import DataBundle
from .samples import TensorSamples, calibration_subset

DIR_ENV_VAR = "PRUNE_CIFAR10_DIR"
JPEG_FILE = "cifar10-jpeg.npz"
EXACT_FILE = "cifar10-test-exact932.npz"
# The statistics the reference CIFAR ResNet checkpoints were trained with (ImageNet's).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEFAULT_CALIBRATION_SIZE = 2048
NUM_CLASSES = 10

_WHERE = (
    f"the CIFAR-10 files ({JPEG_FILE}, {EXACT_FILE}) are looked for in ${DIR_ENV_VAR}, else in "
    "../shared/data/cifar10 from the working directory; point that variable at the folder that "
    "holds them, or name it in the spec as cifar10:DIR"
)
_CORRUPT = "the file is corrupt: copy it again"


def default_cifar10_dir() -> Path:
    """Where bare ``cifar10`` looks: ``$PRUNE_CIFAR10_DIR``, else ``../shared/data/cifar10`` from the cwd."""
    configured = os.environ.get(DIR_ENV_VAR)
    return Path(configured) if configured else Path.cwd() / ".." / "shared" / "data" / "cifar10"


def normalise_rgb(pixels: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``…×H×W×3`` → float ``…×3×H×W``, scaled to [0, 1] and standardised by MEAN/STD."""
    images = torch.tensor(pixels, dtype=torch.float32).div(255).movedim(-1, -3)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (images - mean) / std


class JpegImages(Dataset):
    """Images stored as concatenated JPEG bytes, decoded (and normalised) only when indexed."""

    def __init__(self, jpeg: np.ndarray, offsets: np.ndarray, labels: np.ndarray, source: str):
        self.jpeg = jpeg
        self.offsets = offsets
        self.labels = labels
        self.source = source  # named in decoding errors

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        encoded = self.jpeg[self.offsets[index] : self.offsets[index + 1]].tobytes()
        return normalise_rgb(decode_jpeg(encoded, f"image {index} of {self.source}")), int(self.labels[index])


def decode_jpeg(encoded: bytes, what: str) -> np.ndarray:
    """JPEG bytes → uint8 H×W×3 RGB."""
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{what} is not a readable JPEG ({exc}); {_CORRUPT}") from None


def load_cifar10_bundle(
    directory: Path | None = None, *, jpeg_evaluation: bool = False, calibration_size: int | None = None
) -> DataBundle:
    """CIFAR-10 from ``directory`` (default :func:`default_cifar10_dir`).

    ``jpeg_evaluation`` picks the 10,000 JPEG test images instead of the exact 932 for evaluation.
    """
    directory = Path(directory) if directory is not None else default_cifar10_dir()
    if not directory.is_dir():
        raise DataError(f"CIFAR-10 folder {str(directory)!r} does not exist; {_WHERE}")
    jpeg_path = directory / JPEG_FILE
    train = _jpeg_split(jpeg_path, "train")
    if jpeg_evaluation:
        name = "cifar10-jpeg"
        evaluation = _jpeg_split(jpeg_path, "test")
        input_shape = tuple(evaluation[0][0].shape)  # one decode, to learn the image size
    else:
        name = "cifar10"
        evaluation = _exact_split(directory / EXACT_FILE)
        input_shape = tuple(evaluation.images.shape[1:])
    return DataBundle(
        name=name,
        train=train,
        calibration=calibration_subset(train, calibration_size, DEFAULT_CALIBRATION_SIZE, name),
        evaluation=evaluation,
        num_classes=NUM_CLASSES,
        input_shape=input_shape,
        pixel_mean=MEAN,
        pixel_std=STD,
    )


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"CIFAR-10 file {str(path)!r} does not exist; {_WHERE}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} cannot be read as an .npz archive ({exc}); {_CORRUPT}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single array, not an .npz archive with {', '.join(keys)}")
    with archive:
        missing = [key for key in keys if key not in archive.files]
        if missing:
            raise DataError(
                f"{path} lacks {', '.join(missing)} (it has {', '.join(archive.files) or 'nothing'}); "
                "it is not the expected CIFAR-10 file, see shared/data/README.md for the format"
            )
        try:
            return {key: archive[key] for key in keys}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: cannot read its arrays ({exc}); {_CORRUPT}") from None


def _jpeg_split(path: Path, split: str) -> JpegImages:
    arrays = _read_npz(path, tuple(f"{split}_{key}" for key in ("jpeg", "offsets", "labels")))
    jpeg, offsets, labels = arrays.values()
    count = len(labels)
    fits = (
        jpeg.ndim == 1
        and jpeg.dtype == np.uint8
        and offsets.shape == (count + 1,)
        and count > 0
        and offsets[0] == 0
        and bool(np.all(np.diff(offsets) > 0))
        and offsets[-1] <= len(jpeg)
    )
    if not fits:
        raise DataError(
            f"{path}: {split}_jpeg ({jpeg.dtype}, {jpeg.shape}), {split}_offsets {offsets.shape} and "
            f"{split}_labels {labels.shape} do not fit together; expected uint8 bytes, N+1 increasing "
            "offsets from 0 and N labels: the file is corrupt or of another format"
        )
    _check_labels(labels, f"{path}: {split}_labels")
    return JpegImages(jpeg, offsets.astype(np.int64), labels.astype(np.int64), f"{path} ({split} split)")


def _exact_split(path: Path) -> TensorSamples:
    arrays = _read_npz(path, ("x", "y"))
    pixels, labels = arrays["x"], arrays["y"]
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3 or len(pixels) != len(labels):
        raise DataError(
            f"{path}: x is {pixels.dtype} {pixels.shape} and y has {len(labels)} labels; expected uint8 "
            "N×H×W×3 RGB images and N labels: the file is corrupt or of another format"
        )
    _check_labels(labels, f"{path}: y")
    return TensorSamples(normalise_rgb(pixels), torch.from_numpy(labels.astype(np.int64)))


def _check_labels(labels: np.ndarray, what: str) -> None:
    well_formed = labels.ndim == 1 and labels.size > 0 and np.issubdtype(labels.dtype, np.integer)
    if not well_formed or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(
            f"{what} must be integer classes 0..{NUM_CLASSES - 1}; found {labels.dtype} {labels.shape} "
            "(the file is corrupt or of another format)"
        )
