"""The decomposition tests run torch on one intra-op thread.

Their property tests take ``@settings(deadline=None)`` and everything else (200 derandomized
examples under ``HYPOTHESIS_PROFILE=ci``, 25 under ``dev``) from the profile the repository's
root ``conftest.py`` loads.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The SVDs and convs of small kernels run ~10x slower on a shared 2-core CPU when two intra-op
    threads contend for it. The previous thread count is restored for the rest of the session."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
