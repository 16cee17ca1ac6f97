"""Data from spec strings: train, calibration and evaluation splits as a :class:`DataBundle`.

Spec forms (``--prune-data``):

* ``digits`` — scikit-learn's bundled 8x8 digits at 32x32, the embedded LeNet-5's data (no download);
* ``cifar10`` / ``cifar10:DIR`` — train and calibration from the JPEG train split, evaluation on the
  pixel-exact 932 test images; bare ``cifar10`` looks in ``$PRUNE_CIFAR10_DIR``, else
  ``../shared/data/cifar10`` from the working directory;
* ``cifar10-jpeg`` / ``cifar10-jpeg:DIR`` — the same, but evaluation on the 10,000 JPEG test images;
* ``synthetic:CxHxW:K`` — seeded noise with random labels: exercises the pipeline, accuracy is
  meaningless;
* ``package.module:callable`` — a user function returning a ``DataBundle``, a ``DataLoader``
  (streamed, never read into memory), an ``(x, y)`` pair, or a dict of those with ``train`` and
  ``eval`` entries.

Splits and calibration subsets of real data never depend on the run's seed: baselines depend on them.
"""

from __future__ import annotations

from .bundle import DataBundle
from .spec import DATA_FORMS, load_data

__all__ = ["DATA_FORMS", "DataBundle", "load_data"]
