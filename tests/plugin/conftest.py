"""pytester runs the plugin in this process and drops, after each run, every module that run
imported; some compiled modules (numpy.fft) cannot be imported twice in one process. Importing the
whole pipeline here, once, keeps those modules loaded across the in-process runs."""

import numpy.fft  # noqa: F401
import pandas  # noqa: F401
import sklearn.datasets  # noqa: F401

import pytest_prune.plugin  # noqa: F401
import pytest_prune.run  # noqa: F401
from pytest_prune.data import load_data

load_data("digits")
