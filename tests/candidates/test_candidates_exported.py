"""Exported candidates: a torch.export program, checked, loaded and run."""

from __future__ import annotations

import json

import pytest
import torch
from candidate_nets import assert_clean, max_diff, rewrite_archive

from pytest_prune.candidates import load_candidate
from pytest_prune.errors import WeightsError


def test_pt2_round_trip_gives_equal_outputs(residual_case, exported_path):
    candidate = load_candidate(exported_path, residual_case.dense, residual_case.example)
    assert (candidate.kind, candidate.name) == ("exported", "exported")
    assert max_diff(candidate.model, residual_case.pruned, residual_case.example) <= 1e-6
    assert candidate.widths["conv3"] == 7 and candidate.widths["fc"] == 5


def test_exported_program_must_accept_the_example_input(residual_case, exported_path):
    with pytest.raises(WeightsError, match="does not accept the example input of shape") as e:
        load_candidate(exported_path, residual_case.dense, torch.randn(2, 4, 8, 8))
    assert_clean(e)


def _edit_program(key, value):
    def edit(record, data):
        if record != "models/model.json":
            return data
        program = json.loads(data)
        program[key] = value
        return json.dumps(program).encode()
    return edit


def _pickle_weights(record, data):
    if not record.endswith("_weights_config.json"):
        return data
    config = json.loads(data)
    next(iter(config["config"].values()))["use_pickle"] = True
    return json.dumps(config).encode()


def _symbolic_expression(record, data):
    if record != "models/model.json":
        return data
    evaluated = b'"as_expr": {"expr_str": "__import__(\'os\').getpid()"}'
    return data.replace(b'"as_int": 5', evaluated, 1)


def _unchanged(record, data):
    return data


UNSAFE = {  # what is changed, what is added, and the reason the error must give
    "guard code": (
        _edit_program("guards_code", ["__import__('os').getpid() > 0"]), (), "would be executed"
    ),
    "pickled weight": (_pickle_weights, (), "stored as a pickle"),
    "compiled code": (
        _unchanged, [("data/aotinductor/model/model.so", b"\x7fELF")], "data/aotinductor"
    ),
    "legacy pickle": (_unchanged, [("data/weights/model.pt", b"x")], "legacy pickled payload"),
    "shape expression": (_symbolic_expression, (), "would be evaluated"),
}


@pytest.mark.parametrize("kind", list(UNSAFE))
def test_archive_that_could_run_code_is_refused(kind, residual_case, exported_path, tmp_path):
    edit, add, reason = UNSAFE[kind]
    bad = rewrite_archive(exported_path, tmp_path / "bad.pt2", edit, add)
    with pytest.raises(WeightsError, match=reason) as e:
        load_candidate(bad, residual_case.dense, residual_case.example)
    assert "will not load" in str(e.value)
    assert_clean(e)


def _export(case, tmp_path, name, example, dynamic_shapes=None):
    program = torch.export.export(case.pruned, (example,), dynamic_shapes=dynamic_shapes)
    path = tmp_path / f"{name}.pt2"
    torch.export.save(program, path)
    return load_candidate(path, case.dense, case.example)


def test_static_batch_program_runs_any_batch_in_batches_of_its_size(residual_case, tmp_path):
    # exported for a batch of 3 while the loader's example is 2: padded to 3, then trimmed
    images = torch.randn(7, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    candidate = _export(residual_case, tmp_path, "static", images[:3])
    assert (candidate.model.spec.low, candidate.model.spec.high) == (3, 3)
    assert [len(chunk) for chunk, _ in candidate.model.batches(images)] == [3, 3, 3]
    assert max_diff(candidate.model, residual_case.pruned, images) <= 1e-6
    assert max_diff(candidate.model, residual_case.pruned, images[:1]) <= 1e-6
    assert any("run in batches of at most 3" in note for note in candidate.notes)


def test_bounded_dynamic_batch_is_cut_to_its_range(residual_case, tmp_path):
    batch = torch.export.Dim("batch", min=2, max=4)
    images = torch.randn(9, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    candidate = _export(residual_case, tmp_path, "bounded", images[:2], ({0: batch},))
    assert (candidate.model.spec.low, candidate.model.spec.high) == (2, 4)
    assert [real for _, real in candidate.model.batches(images)] == [4, 4, 1]
    assert max_diff(candidate.model, residual_case.pruned, images) <= 1e-6


def test_unbounded_dynamic_batch_runs_as_it_is(residual_case, tmp_path):
    images = torch.randn(9, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    candidate = _export(residual_case, tmp_path, "dynamic", images[:2], ({0: torch.export.Dim("batch")},))
    assert candidate.model.spec.high is None
    assert [real for _, real in candidate.model.batches(images)] == [9]
    assert max_diff(candidate.model, residual_case.pruned, images) <= 1e-6
    assert not any("batches of at most" in note for note in candidate.notes)


def test_sample_shape_that_does_not_fit_names_both_shapes(residual_case, tmp_path):
    candidate = _export(residual_case, tmp_path, "fits", residual_case.example)
    expected = r"an input of shape \(2, 3, 9, 9\): it takes batch 2 × \(3, 8, 8\)"
    with pytest.raises(WeightsError, match=expected) as e:
        candidate.model.check_input(torch.randn(2, 3, 9, 9))
    assert_clean(e)
    with pytest.raises(WeightsError, match=expected):  # and on every call
        candidate.model(torch.randn(2, 3, 9, 9))


def test_every_convolution_output_is_marked_by_its_layer_name(residual_case, exported_path):
    model = load_candidate(exported_path, residual_case.dense, residual_case.example).model
    assert list(model.conv_outputs) == ["conv1", "conv2", "conv3"]
    seen = []
    marker = model.get_submodule(model.conv_outputs["conv3"])
    handle = marker.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(residual_case.example)
    handle.remove()
    assert seen == [torch.Size([2, 7, 4, 4])]  # conv3's output, 7 of its 12 channels kept


def test_gradcam_on_a_static_batch_program_equals_gradcam_on_the_module(residual_case, exported_path):
    from pytest_prune.pipeline.inspection import attribution_look
    from pytest_prune.measure.attribution import attribution_maps, predicted_classes

    model = load_candidate(exported_path, residual_case.dense, residual_case.example).model
    images = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(6))  # 5: one padded
    targets = predicted_classes(residual_case.dense, images)
    dense_maps = (targets, attribution_maps(residual_case.dense, images, targets, "gradcam"))
    look = attribution_look(dense_maps, model, images, "gradcam", None, residual_case.dense)
    expected = attribution_look(dense_maps, residual_case.pruned, images, "gradcam", None)
    assert look == pytest.approx(expected, abs=1e-6)


def test_gradcam_refuses_a_program_without_the_dense_last_conv(residual_case, exported_path):
    from candidate_nets import TinyVGG

    from pytest_prune.errors import TraceError
    from pytest_prune.pipeline.inspection import gradcam_layer

    model = load_candidate(exported_path, residual_case.dense, residual_case.example).model
    with pytest.raises(TraceError, match=r"'features.7'.*conv1, conv2, conv3.*integrated_gradients"):
        gradcam_layer(TinyVGG(), model)
