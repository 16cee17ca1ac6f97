"""Latency: positive, summarised robustly, interleaved (eager and ONNX Runtime); only a gross cost
difference is asserted."""

import pytest
import torch
from torch import nn

from pytest_prune.errors import PruneError
from pytest_prune.measure.export import onnx_available
from pytest_prune.measure.latency import latency, speedup


def conv(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(channels, channels, 3, padding=1)


def test_latency_is_positive_and_restores_mode_and_threads():
    model = conv(4).train()
    threads = torch.get_num_threads()
    result = latency(model, torch.rand(1, 4, 16, 16), repeats=7, warmup=1)
    assert result.median_ms > 0 and result.iqr_ms >= 0
    assert len(result.samples) == 7 and result.threads == 1
    assert min(result.samples) <= result.median_ms <= max(result.samples)
    assert model.training and torch.get_num_threads() == threads


class FirstChannels(nn.Module):
    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def forward(self, x):
        return x[:, : self.count]  # a view: costs nothing next to a conv


def test_a_64x_heavier_conv_is_slower_in_the_same_run():
    # 64→64 vs 8→8 channels at the same size: 64x the MACs. Asserting only the order of the two
    # (not a timing threshold) keeps this robust on a busy machine.
    heavy, tiny = conv(64), nn.Sequential(FirstChannels(8), conv(8))
    result = speedup(heavy, tiny, torch.rand(1, 64, 32, 32), repeats=15, warmup=2)
    assert result.dense.median_ms > result.pruned.median_ms
    assert result.speedup == pytest.approx(result.dense.median_ms / result.pruned.median_ms)
    assert len(result.dense.samples) == len(result.pruned.samples) == 15


def test_bad_settings_are_named():
    with pytest.raises(PruneError, match="repeats=0"):
        latency(conv(2), torch.rand(1, 2, 4, 4), repeats=0)


def test_interleaved_calls_alternate_the_order_every_round():
    from pytest_prune.measure.latency import interleaved_calls

    calls: list[str] = []
    results = interleaved_calls([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a b / b a / a b
    assert [len(r.samples) for r in results] == [3, 3]


def test_an_unknown_backend_or_onnxruntime_without_the_extra_is_named(monkeypatch):
    import pytest_prune.measure.export as export
    from pytest_prune.errors import SpecError
    from pytest_prune.measure.latency import check_backend, default_backend

    with pytest.raises(SpecError, match="'tvm' is unknown; use one of eager, onnxruntime"):
        check_backend("tvm")
    assert default_backend("cuda") == "eager"  # ONNX Runtime runs on the CPU here
    monkeypatch.setattr(export, "onnx_available", lambda: True)
    assert default_backend("cpu") == "onnxruntime"  # what is deployed, where it can be timed
    monkeypatch.setattr(export, "onnx_available", lambda: False)
    assert default_backend("cpu") == "eager"
    with pytest.raises(SpecError, match=r'pip install -e "\.\[onnx\]"'):
        check_backend("onnxruntime")


onnx_only = pytest.mark.skipif(not onnx_available(), reason='needs the onnx extra: pip install -e ".[onnx]"')


@onnx_only
def test_onnxruntime_backend_times_the_exported_models_and_records_backend_and_spread():
    from pytest_prune.measure.latency import backend_latency

    heavy, tiny = conv(64), nn.Sequential(FirstChannels(8), conv(8))
    fields = backend_latency(heavy, tiny, torch.rand(1, 64, 32, 32), repeats=15, backend="onnxruntime")
    assert fields["latency_backend"] == "onnxruntime"
    assert fields["latency_dense_ms"] > fields["latency_pruned_ms"] > 0  # 64x the MACs: slower in ORT too
    assert fields["latency_dense_iqr_ms"] >= 0 and fields["latency_pruned_iqr_ms"] >= 0
    assert fields["speedup"] == pytest.approx(fields["latency_dense_ms"] / fields["latency_pruned_ms"])


class _Unexportable(nn.Module):
    """A forward the ONNX exporter refuses: aten::cumprod has no ONNX symbolic at opset 17."""

    def __init__(self):
        super().__init__()
        self.body = conv(8)

    def forward(self, x):
        return self.body(x).cumprod(1)


@onnx_only
def test_the_default_backend_times_an_unexportable_model_eagerly_and_a_named_one_fails():
    from pytest_prune.errors import TraceError
    from pytest_prune.measure.latency import backend_latency

    dense, x = _Unexportable(), torch.rand(1, 8, 16, 16)
    fields = backend_latency(dense, dense, x, repeats=3, backend=None)
    assert fields["latency_backend"] == "eager" and fields["latency_dense_ms"] > 0
    with pytest.raises(TraceError, match="cannot be exported to ONNX"):
        backend_latency(dense, dense, x, repeats=3, backend="onnxruntime")
