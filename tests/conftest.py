"""Shared test setup: modules loaded once for the in-process pytest runs, one thread per test.

pytester runs the plugin in this process and drops, after each run, every module that run imported;
some compiled modules (numpy.fft) cannot be imported twice in one process. Importing the whole
pipeline here, once, keeps those modules loaded across the in-process runs.
"""

import numpy.fft  # noqa: F401
import pandas  # noqa: F401
import pytest
import sklearn.datasets  # noqa: F401
from threadpoolctl import threadpool_limits

import pytest_prune.plugin  # noqa: F401
import pytest_prune.report  # noqa: F401
import pytest_prune.pipeline.run  # noqa: F401
from pytest_prune.data import load_data
from pytest_prune.modes import torch_threads

load_data("digits")

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op torch thread and one BLAS thread per test, restored afterwards. The test models
    are small: a second thread gains nothing, and on a shared 2-core machine spinning threads made
    the same tests 10-20x slower (measured on lsq, numpy's SVDs in VBMF and the surgery suite)."""
    with torch_threads(1), threadpool_limits(1):
        yield
