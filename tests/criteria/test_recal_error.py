"""Known answers of ``recal-error``: planted channels, the measured error equal to what masking
does at the next BatchNorm after recentring, and channels whose contributions cancel."""

from __future__ import annotations

import pytest
import torch

from planted_net import DEAD, FREE, ORIGINAL, TWIN
from pytest_prune.criteria import get_criterion
from pytest_prune.criteria._activations import trace_calls
from pytest_prune.criteria.recal_error import measured_error_gram
from pytest_prune.masking import channels_masked
from pytest_prune.plan import PrunePlan


def _scores(tiny) -> torch.Tensor:
    return get_criterion("recal-error").scores(tiny.context())["conv1"]


def test_dead_channel_and_unused_twin_score_zero_and_rank_lowest(tiny):
    scores = _scores(tiny)
    assert float(scores[DEAD]) < 1e-300 and float(scores[TWIN]) < 1e-300  # zero, or one ulp above
    assert max(scores[DEAD], scores[TWIN]) < scores[FREE].min()
    assert scores[TWIN] < scores[ORIGINAL]


def _recentred_change_at_bn2(tiny, removed: list[int]) -> float:
    """Mean over samples of ‖Δ‖², Δ the change masking ``removed`` makes to bn2's output, each
    output channel's mean over samples and positions taken out (what recalibration absorbs)."""
    outputs = []
    hook = tiny.model.bn2.register_forward_hook(lambda m, i, o: outputs.append(o.detach().double()))
    try:
        with torch.no_grad():
            for x, _ in tiny.batches:
                tiny.model(x)
            with channels_masked(tiny.model, tiny.groups, PrunePlan({"conv1": tuple(removed)})):
                for x, _ in tiny.batches:
                    tiny.model(x)
    finally:
        hook.remove()
    half = len(outputs) // 2
    delta = torch.cat(outputs[half:]) - torch.cat(outputs[:half])
    delta = delta - delta.mean(dim=(0, 2, 3), keepdim=True)
    return float(delta.pow(2).sum()) / delta.shape[0]


@pytest.mark.parametrize("removed", [[0], [3, 5], [1, 2, 4, 7, 8], [0, TWIN]])
def test_measured_gram_equals_the_recentred_change_masking_makes(tiny, removed):
    group = next(g for g in tiny.groups if g.name == "conv1")
    trace = trace_calls(tiny.model, tiny.batches[0][0][:1])
    gram = measured_error_gram(tiny.model, group, trace, tiny.batches)
    predicted = float(gram[removed][:, removed].sum())
    assert predicted == pytest.approx(_recentred_change_at_bn2(tiny, removed), rel=1e-4)


def test_channels_whose_contributions_cancel_go_one_after_the_other(tiny):
    """TWIN copies ORIGINAL's activations; with opposite consumer weights the pair sends nothing
    to the next layer, so once one of them goes the other is free and goes next."""
    with torch.no_grad():
        tiny.model.conv2.weight[:, TWIN] = -tiny.model.conv2.weight[:, ORIGINAL]
    order = torch.argsort(_scores(tiny)).tolist()
    assert abs(order.index(ORIGINAL) - order.index(TWIN)) == 1
    assert order[0] == DEAD


def test_uncentred_error_keeps_the_mean_shift(tiny):
    """Without centring the same channels cost more: the mean shift recalibration would absorb."""
    group = next(g for g in tiny.groups if g.name == "conv1")
    trace = trace_calls(tiny.model, tiny.batches[0][0][:1])
    centred = measured_error_gram(tiny.model, group, trace, tiny.batches)
    raw = measured_error_gram(tiny.model, group, trace, tiny.batches, centred=False)
    assert torch.all(raw.diagonal()[FREE] >= centred.diagonal()[FREE])
    assert torch.any(raw.diagonal()[FREE] > 1.01 * centred.diagonal()[FREE])
