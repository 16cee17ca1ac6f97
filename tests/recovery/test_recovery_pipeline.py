"""Recovery specs and the contract every step keeps: a new model, same shapes, inputs untouched,
modes restored, bitwise reproducible under the seed."""

from __future__ import annotations

import pytest
import torch

from pytest_prune.errors import SpecError
from pytest_prune.recovery import (
    RecoveryPipeline,
    known_steps,
    parse_recovery,
    resolve_device,
)
from pytest_prune.recovery.finetune import FineTune

from hand_pruned import (
    assert_same_state,
    hand_groups,
    hand_prune,
    modes_of,
    state_of,
    tiny_bundle,
    tiny_conv_net,
)

CHAINS = {("conv1", "bn1", "conv2"): [0, 2, 3, 5, 6]}
SIZES = {("conv1", "bn1", "conv2"): 8}
EVERY_STEP = ["none", "bn", "lsq", "finetune:1", "finetune-kd:1", "lsq+bn", "lsq+finetune:1"]


@pytest.mark.parametrize(
    "spec, name",
    [
        ("none", "none"),
        ("bn", "bn"),
        ("bn:2048", "bn"),  # the default count is left out of the canonical name
        ("bn:512", "bn:512"),
        (" LSQ + BN ", "lsq+bn"),
        ("lsq+finetune:1", "lsq+finetune:1"),
        ("lsq:1024+finetune-kd:3", "lsq+finetune-kd:3"),
        ("bn+bn", "bn+bn"),
    ],
)
def test_canonical_names(spec, name):
    assert parse_recovery(spec).name == name


def test_every_registered_step_parses():
    assert {"none", "bn", "lsq", "finetune", "finetune-kd"} <= set(known_steps())
    for name in known_steps():
        spec = f"{name}:1" if name.startswith("finetune") else name
        assert parse_recovery(spec).name == spec


def test_unknown_step_names_the_known_ones():
    with pytest.raises(SpecError) as info:
        parse_recovery("lsq+magic")
    message = str(info.value)
    assert "'magic'" in message
    for name in known_steps():
        assert name in message


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "empty"),
        ("lsq++bn", "empty step"),
        ("finetune", "needs a number of epochs"),
        ("finetune:1.5", "whole number"),
        ("finetune:0", "whole number"),
        ("bn:-3", "whole number"),
        ("none:2", "takes no argument"),
        ("none+bn", "combines 'none'"),
    ],
)
def test_bad_specs_say_what_to_write(spec, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_recovery(spec)


def test_cuda_without_cuda_is_a_spec_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SpecError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(SpecError, match="not a torch device"):
        resolve_device("gpu-please")


def _setup(train_mode: bool = False):
    dense = tiny_conv_net()
    pruned = hand_prune(dense, CHAINS)
    groups, plan = hand_groups(CHAINS, SIZES)
    if train_mode:
        pruned.train()
        pruned.drop.eval()  # a mixed state, to check that each flag comes back as it was
    return dense, pruned, groups, plan


@pytest.mark.parametrize("spec", EVERY_STEP)
def test_recovery_returns_new_model_and_changes_neither_input(spec):
    dense, pruned, groups, plan = _setup(train_mode=True)
    dense_state, pruned_state = state_of(dense), state_of(pruned)
    dense_modes, pruned_modes = modes_of(dense), modes_of(pruned)
    lines: list[str] = []
    result = parse_recovery(spec).recover(
        dense, pruned, tiny_bundle(), seed=0, groups=groups, plan=plan, progress=lines.append
    )
    assert result.model is not pruned and result.model is not dense
    assert_same_state(state_of(dense), dense_state)
    assert_same_state(state_of(pruned), pruned_state)
    assert modes_of(dense) == dense_modes and modes_of(pruned) == pruned_modes
    assert modes_of(result.model) == pruned_modes
    recovered = result.model.state_dict()
    assert {k: v.shape for k, v in recovered.items()} == {k: v.shape for k, v in pruned_state.items()}
    assert not dense._forward_hooks and not dense.conv2._forward_hooks  # no hooks left behind
    assert result.spec == parse_recovery(spec).name and result.seconds > 0
    assert len(result.steps) == spec.count("+") + 1 and lines  # progress was reported
    if spec != "none":
        changed = [k for k in recovered if not torch.equal(recovered[k], pruned_state[k])]
        assert changed, f"{spec} changed nothing"


@pytest.mark.parametrize("spec", EVERY_STEP)
def test_same_seed_gives_bitwise_identical_weights(spec):
    dense, pruned, groups, plan = _setup()
    runs = [
        parse_recovery(spec).recover(dense, pruned, tiny_bundle(), seed=7, groups=groups, plan=plan)
        for _ in range(2)
    ]
    assert_same_state(state_of(runs[0].model), state_of(runs[1].model))


@pytest.mark.parametrize("spec", ["lsq", "finetune:1"])
def test_the_seed_is_used(spec):
    dense, pruned, groups, plan = _setup()
    a, b = (
        parse_recovery(spec).recover(dense, pruned, tiny_bundle(), seed=s, groups=groups, plan=plan)
        for s in (1, 2)
    )
    assert not torch.equal(a.model.conv2.weight, b.model.conv2.weight)


def test_recovery_leaves_the_global_random_state_alone():
    dense, pruned, _, _ = _setup()
    before = torch.random.get_rng_state()
    RecoveryPipeline((FineTune(1, max_batches=1),)).recover(dense, pruned, tiny_bundle(), seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
