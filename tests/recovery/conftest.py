"""One torch thread for the recovery tests.

Their tensors are tiny: extra threads gain nothing, and on a shared machine OpenMP's spinning
threads made them 10-20× slower (measured: 0.3 s against 5 s for ``lsq`` on a pruned ResNet-20).
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
