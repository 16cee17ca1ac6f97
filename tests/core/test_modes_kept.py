"""Every stage that runs a model it does not own gives it back in exactly the modes it had.

The model here has mixed modes (training, with one BatchNorm frozen in eval), which a
``model.train(was_training)`` restore flattens to all-training: that was how five stages restored
modes before they shared :mod:`pytest_prune.modes`.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_prune.decompose.apply import _input_shapes
from pytest_prune.measure import count_model, evaluate_together
from pytest_prune.measure.attribution import attribution_maps, predicted_classes
from pytest_prune.measure.colour import channel_responses
from pytest_prune.measure.latency import interleaved_latency
from pytest_prune.modes import eval_mode, modes_kept, torch_threads
from pytest_prune.surgery import find_channel_groups


def _mixed() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    return model


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
STAGES = {
    "count_model": lambda m: count_model(m, X),
    "evaluate_together": lambda m: evaluate_together([m], [(X, torch.zeros(4, dtype=torch.long))]),
    "predicted_classes": lambda m: predicted_classes(m, X),
    "attribution_maps": lambda m: attribution_maps(m, X, method="saliency"),
    "channel_responses": lambda m: channel_responses(m, "0", X),
    "interleaved_latency": lambda m: interleaved_latency([m], X, repeats=1, warmup=0),
    "decompose shapes": lambda m: _input_shapes(m, X),
    "find_channel_groups": lambda m: find_channel_groups(m, X),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_leaves_mixed_modes_as_they_were(stage):
    model = _mixed()
    before = _modes(model)
    assert before.count(True) > 1 and False in before
    STAGES[stage](model)
    assert _modes(model) == before


def test_the_guards_restore_on_error_too():
    model = _mixed()
    before, threads = _modes(model), torch.get_num_threads()
    with pytest.raises(RuntimeError), modes_kept(model), torch_threads(threads + 1):
        model.train()
        raise RuntimeError("boom")
    assert _modes(model) == before and torch.get_num_threads() == threads
    with eval_mode(model) as inside:
        assert inside is model and not any(_modes(model))
    assert _modes(model) == before


def test_an_xdist_worker_takes_its_share_of_the_cores(monkeypatch):
    from pytest_prune.modes import share_cores

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    try:
        assert share_cores(1) is None and torch.get_num_threads() == before  # serial: torch's default
        assert share_cores(3) == 2 and torch.get_num_threads() == 2  # 8 cores, 3 workers
        assert share_cores(16) == 1 and torch.get_num_threads() == 1  # never zero
        torch.set_num_threads(before)
        monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's count wins
        assert share_cores(2) is None and torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
