"""Shared test setup: modules loaded once for the in-process pytest runs, one thread per test.

pytester runs the plugin in this process and drops, after each run, every module that run imported;
some compiled modules (numpy.fft) cannot be imported twice in one process. Importing the whole
pipeline once, before the first test, keeps those modules loaded across the in-process runs.

That import happens in a session fixture, not when this file is read: pytest reads this file in
every run from the repository root, including `pytest --prune-model=...` with no test path, where
importing torch, pandas and scikit-learn here delayed the gates (and each pytest-xdist worker) by
about 4 s before any of them was needed.
"""

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True, scope="session")
def pipeline_loaded():
    """The modules that in-process pytest runs must not import afresh, and the digits data, loaded once."""
    import importlib.util

    import numpy.fft  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.datasets  # noqa: F401

    for name in ("onnx", "onnxruntime"):  # the export check's extra: onnxruntime aborts when imported twice
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)

    import pytest_prune.pipeline.run  # noqa: F401
    import pytest_prune.plugin  # noqa: F401
    import pytest_prune.report  # noqa: F401
    from pytest_prune.data import load_data

    load_data("digits")


@pytest.fixture(autouse=True)
def one_torch_thread(pipeline_loaded):
    """One intra-op torch thread and one BLAS thread per test, restored afterwards. The test models
    are small: a second thread gains nothing, and on a shared 2-core machine spinning threads made
    the same tests 10-20x slower (measured on lsq, numpy's SVDs in VBMF and the surgery suite)."""
    from threadpoolctl import threadpool_limits

    from pytest_prune.modes import torch_threads

    with torch_threads(1), threadpool_limits(1):
        yield
