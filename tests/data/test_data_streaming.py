"""A user's DataLoader is streamed: same figures as the same data in memory, never held, checked
batch by batch as it streams."""

import json

import pytest
import torch

from pytest_prune.data import load_data
from pytest_prune.data.loader_split import LoaderSplit
from pytest_prune.errors import DataError
from pytest_prune.measure import evaluate
from pytest_prune.pipeline.provenance import dataset_digest
from pytest_prune.pipeline.run import PruneRun
from pytest_prune.pipeline.settings import RunSettings

_FACTORIES = '''
import weakref

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

SIZE = 1500
BATCH = 64
BATCHES = {"alive": 0, "most_alive": 0, "made": 0}  # batches the loader has collated


class Generated(Dataset):
    """Images made from their index with a seeded generator: the dataset holds nothing."""

    def __init__(self, count, odd_shape_from=None):
        self.count = count
        self.odd_shape_from = odd_shape_from  # samples from this index on are 3x12x12

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        odd = self.odd_shape_from is not None and index >= self.odd_shape_from
        shape = (3, 12, 12) if odd else (3, 16, 16)
        image = torch.randn(shape, generator=torch.Generator().manual_seed(index))
        return image, (index * 7) % 5


def _gone():
    BATCHES["alive"] -= 1


def counted(samples):
    images, labels = default_collate(samples)
    BATCHES["alive"] += 1
    BATCHES["made"] += 1
    BATCHES["most_alive"] = max(BATCHES["most_alive"], BATCHES["alive"])
    weakref.finalize(images, _gone)
    return images, labels


def build():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 16 * 16, 5),  # no pooling: random weights still tell noise apart
    ).eval()


def build_with_classes():
    model = build()
    model.num_classes = 5
    return model


def build_with_three_classes():
    model = build()
    model.num_classes = 3
    return model


def loader():
    return DataLoader(Generated(SIZE), batch_size=BATCH, collate_fn=counted)


def pair():
    images, labels = zip(*(Generated(SIZE)[i] for i in range(SIZE)))
    return torch.stack(images), torch.tensor(labels)


def shuffled():
    return DataLoader(Generated(SIZE), batch_size=BATCH, shuffle=True)


def third_batch_of_another_shape():
    return DataLoader(Generated(SIZE, odd_shape_from=2 * BATCH), batch_size=BATCH)
'''

@pytest.fixture
def module(factories_module) -> str:
    """The name of a fresh, importable module holding the factories above."""
    return factories_module(_FACTORIES, "prune_streamed_data")


def _run(module: str, data: str, model: str = "build", **settings) -> PruneRun:
    return PruneRun(RunSettings(model=f"{module}:{model}", data=f"{module}:{data}", **settings))


def test_a_stream_gives_the_gate_figures_of_the_same_data_in_memory(module):
    streamed, in_memory = _run(module, "loader"), _run(module, "pair")
    assert isinstance(streamed.data.evaluation, LoaderSplit)
    a, b = streamed.method("l1", 0.3, inspect=False), in_memory.method("l1", 0.3, inspect=False)
    assert 0.0 < a.top1_dense < 1.0 and a.top1_pruned != a.top1_dense  # figures that could differ
    assert (a.top1_dense, a.top1_pruned, a.accuracy_drop) == (b.top1_dense, b.top1_pruned, b.accuracy_drop)
    assert (a.macs_pruned, a.params_pruned) == (b.macs_pruned, b.params_pruned)
    # the evaluation digest is over the same images and labels in the same order
    assert a.provenance["data"]["evaluation"] == b.provenance["data"]["evaluation"]


def test_the_stream_is_never_held_in_memory(module):
    import importlib

    factories = importlib.import_module(module)
    run = _run(module, "loader")
    run.method("l1", 0.3, inspect=False)
    batches, per_pass = factories.BATCHES, -(-factories.SIZE // factories.BATCH)
    assert batches["made"] >= 2 * per_pass  # the evaluation and the digest each read it again
    # in flight: the loader batches that make the largest batch asked (the digest's 512: 8 of 64),
    # the one being cut and the one being read; gathering the data would hold all 24 at once
    assert batches["most_alive"] <= 512 // factories.BATCH + 3 < per_pass
    split = run.data.evaluation
    assert not [value for value in vars(split).values() if isinstance(value, torch.Tensor)]


def test_eval_limit_cuts_the_stream_without_reading_it_whole(module):
    limited = _run(module, "loader", eval_limit=40)
    assert len(limited.data.evaluation) == 40
    assert evaluate(limited.info.model, limited.data.evaluation).samples == 40
    first_40 = load_data(f"{module}:pair").evaluation
    expected = evaluate(limited.info.model, torch.utils.data.Subset(first_40, range(40))).top1
    assert limited.dense_top1 == expected


def test_a_batch_of_another_shape_fails_with_one_data_error_naming_it(module):
    says = r"batch 2: x has shape \(64, 3, 12, 12\), but the loader's first batch held images of shape \(3, 16, 16\)"
    bundle = load_data(f"{module}:third_batch_of_another_shape", num_classes=5)  # the first batch is fine
    assert bundle.input_shape == (3, 16, 16)
    with pytest.raises(DataError, match=says) as error:
        _run(module, "third_batch_of_another_shape", "build_with_classes").dense_top1
    assert f"{module}:third_batch_of_another_shape" in str(error.value)
    with pytest.raises(DataError, match=says):  # without a class count, the counting pass finds it
        load_data(f"{module}:third_batch_of_another_shape")


def test_calibration_is_the_first_train_samples_streamed(module):
    bundle = load_data(f"{module}:loader", calibration_size=20)
    calibration = torch.cat([x for x, _ in bundle.calibration_batches(batch_size=8)])
    first = next(iter(bundle.loader("train", batch_size=20)))[0]
    assert calibration.shape == (20, 3, 16, 16) and torch.equal(calibration, first)
    with pytest.raises(DataError, match=r"calibration_size=1501 .* train split has 1500 samples"):
        load_data(f"{module}:loader", calibration_size=1501)


def test_a_shuffling_loader_is_read_in_one_order_and_leaves_the_callers_rng_alone(module):
    bundle = load_data(f"{module}:shuffled")

    def labels(loader):
        return torch.cat([y for _, y in loader]).tolist()

    torch.manual_seed(5)
    before = torch.rand(1)
    once, again = labels(bundle.loader("evaluation", 32)), labels(bundle.loader("evaluation", 32))
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), before)  # the passes drew nothing from the caller's RNG
    assert once == again and sorted(once) == sorted(labels(load_data(f"{module}:loader").loader("evaluation")))
    assert dataset_digest(bundle.evaluation) == dataset_digest(bundle.evaluation)
    # fine-tuning asks for shuffled epochs: each epoch its own order, the same in every run
    epochs = bundle.loader("train", 32, shuffle=True, seed=3)
    first, second = labels(epochs), labels(epochs)
    assert first != second and first == labels(load_data(f"{module}:shuffled").loader("train", 32, True, 3))


def test_the_models_class_count_spares_the_counting_pass_and_is_checked(module):
    import importlib

    factories = importlib.import_module(module)
    made = factories.BATCHES["made"]
    bundle = load_data(f"{module}:loader", num_classes=5)
    assert bundle.num_classes == 5 and factories.BATCHES["made"] == made + 1  # the first batch only
    assert load_data(f"{module}:loader").num_classes == 5  # counted in one pass otherwise
    with pytest.raises(DataError, match=r"batch 0: y holds label 4, but the model has 3 classes"):
        _run(module, "loader", "build_with_three_classes").data


def test_eval_limit_on_a_stream_through_the_plugin(pytester, module, monkeypatch):
    monkeypatch.chdir(pytester.path)
    args = [f"--prune-model={module}:build_with_classes", f"--prune-data={module}:loader",
            "--prune-criteria=l1", "--prune-ratios=0.3", "--prune-eval-limit=40", "-p", "no:randomly"]
    written = pytester.runpytest(*args, "--prune-update-baselines")
    assert written.parseoutcomes().get("failed", 0) == 0, written.stdout.str()[-2000:]
    stored = json.loads((pytester.path / "baselines" / f"{module}.build_with_classes" / "l1-0.3.json").read_text())
    assert stored["settings"]["eval_limit"] == 40
    run = _run(module, "loader", "build_with_classes", eval_limit=40)
    assert stored["provenance"]["dense_model"]["top1"] == run.dense_top1
    again = pytester.runpytest(*args)
    assert again.parseoutcomes() == {"passed": written.parseoutcomes()["passed"]}, again.stdout.str()[-2000:]


def test_fine_tuning_streams_the_train_loader_in_batches_of_its_own(module):
    run = _run(module, "loader")
    lines: list[str] = []
    run.progress = lines.append
    result = run.method("l1", 0.3, "finetune:1", inspect=False)
    assert result.recovery_seconds > 0
    assert any("epoch 1/1" in line and "over 12 batches" in line for line in lines), lines  # 1,500 / 128
