"""Surgery properties over random architectures (pytest_prune.strategies).

For every drawn CNN and plan: the pruned model computes what the masked dense model computes, every
layer has the width the *description* predicts (not the engine's own groups), the dense model is
left exactly as it was, and the groups partition the prunable channels. The number of examples
follows the hypothesis profile: ``HYPOTHESIS_PROFILE=ci`` (200, derandomized) or ``dev``.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import event, given, settings
from torch import nn

from pytest_prune import strategies as S
from pytest_prune.equivalence import max_abs_difference
from pytest_prune.errors import TraceError
from pytest_prune.groups import ChannelGroup
from pytest_prune.surgery import find_channel_groups, prune_model

S.register_profiles()
PROFILE = settings(settings.get_profile(S.selected_profile()))
TOLERANCE = 1e-5  # float32 round-off between the pruned and the masked dense model


def assert_untouched(model: nn.Module, pristine: nn.Module, by: str) -> None:
    """``model`` still has exactly the tensors and train/eval modes of ``pristine``."""
    state, fresh = model.state_dict(), pristine.state_dict()
    assert state.keys() == fresh.keys(), f"{by} changed the dense model's layers"
    changed = [k for k in state if not torch.equal(state[k], fresh[k])]
    assert not changed, f"{by} changed the dense model's {changed[:5]}"
    modes = {n: m.training for n, m in model.named_modules()}
    want = {n: m.training for n, m in pristine.named_modules()}
    flipped = sorted(n for n in want if modes.get(n) != want[n])
    assert not flipped, f"{by} flipped the train/eval mode of {flipped[:5]}"


def _record(case: S.PruningCase) -> None:
    """What the example prunes, for --hypothesis-show-statistics (and a check that it prunes)."""
    assert case.groups and case.plan.count() > 0, "a case that removes no channel tests nothing"
    pruned_groups = sum(1 for removed in case.plan.remove.values() if removed)
    event(f"groups traced: {min(len(case.groups), 5)}{'+' if len(case.groups) >= 5 else ''}")
    event(f"share of groups pruned: {'all' if pruned_groups == len(case.groups) else 'some'}")
    event(f"removes a position bundled by a grouped conv: {'yes' if _removes_bundle(case) else 'no'}")
    event(f"removes a channel of a shared-weights block: {'yes' if _removes_shared(case) else 'no'}")
    event(f"removes a channel of a transposed conv: {'yes' if _removes_transposed(case) else 'no'}")


def _removes_bundle(case: S.PruningCase) -> bool:
    by_name = {g.name: g for g in case.groups}
    return any(len(by_name[name].members[0].indices[p]) > 1 for name, ps in case.plan.remove.items() for p in ps)


def _removes_shared(case: S.PruningCase) -> bool:
    """Whether the plan removes a channel that a block run twice (shared weights) reads or writes."""
    shared = tuple(f"features.{i}." for i, b in enumerate(case.architecture.blocks) if isinstance(b, S.SharedSpec))
    by_name = {g.name: g for g in case.groups}
    return any(
        removed and any(m.module.startswith(shared) for m in by_name[name].members)
        for name, removed in case.plan.remove.items()
    ) if shared else False


def _removes_transposed(case: S.PruningCase) -> bool:
    """Whether the plan removes a channel that a transposed conv writes or reads."""
    transposed = {n for n, m in case.model.named_modules() if isinstance(m, nn.ConvTranspose2d)}
    by_name = {g.name: g for g in case.groups}
    return any(
        removed and any(m.module in transposed for m in by_name[name].members)
        for name, removed in case.plan.remove.items()
    )


def test_grouped_convs_shared_blocks_and_transposed_convs_are_pruned_in_a_fair_share_of_examples():
    """The property tests reach grouped convs, blocks run twice and transposed convs: of 60 drawn
    cases, some remove a bundled position, some a channel of a shared-weights block, some a
    channel of a transposed conv."""
    seen = []

    @settings(max_examples=60, derandomize=True, deadline=None, database=None)
    @given(case=S.pruning_cases())
    def draw(case):
        seen.append((_removes_bundle(case), _removes_shared(case), _removes_transposed(case)))

    draw()
    bundled, shared, transposed = (sum(column) for column in zip(*seen))
    assert bundled >= 0.1 * len(seen), f"{bundled} of {len(seen)} cases remove a bundled position"
    assert shared >= 0.1 * len(seen), f"{shared} of {len(seen)} cases remove a channel of a shared block"
    assert transposed >= 0.1 * len(seen), f"{transposed} of {len(seen)} cases remove a transposed conv's channel"


@PROFILE
@given(case=S.pruning_cases())
def test_pruned_model_equals_masked_dense_model_and_leaves_it_alone(case: S.PruningCase):
    _record(case)
    pristine = S.build(case.architecture).train(case.training)
    assert_untouched(case.model, pristine, "find_channel_groups")

    pruned = prune_model(case.model, case.groups, case.plan, case.example_input)
    assert_untouched(case.model, pristine, "prune_model")
    assert {n: m.training for n, m in pruned.named_modules()} == {
        n: m.training for n, m in case.model.named_modules()
    }, "the pruned copy does not keep the dense model's train/eval modes"

    difference = max_abs_difference(case.model, pruned, case.groups, case.plan, case.example_input)
    assert difference <= TOLERANCE, f"pruned and masked dense outputs differ by {difference:.3g}"
    assert_untouched(case.model, pristine, "max_abs_difference")


@PROFILE
@given(case=S.pruning_cases())
def test_pruned_layers_have_the_widths_the_description_predicts(case: S.PruningCase):
    _record(case)
    pruned = prune_model(case.model, case.groups, case.plan, case.example_input)
    expected = S.expected_shapes(case.architecture, case.groups, case.plan)

    measured = S.measured_shapes(pruned)
    wrong = {n: (expected.get(n), measured.get(n)) for n in expected.keys() | measured.keys()
             if expected.get(n) != measured.get(n)}  # fmt: skip
    assert not wrong, f"layer attributes (expected, got): {wrong}"

    got = {n: tuple(p.shape) for n, p in pruned.named_parameters()}
    assert got == S.parameter_shapes(expected)
    for name, module in pruned.named_modules():
        if isinstance(module, nn.BatchNorm2d):  # a leaked running statistic breaks eval mode
            width = (expected[name].out_width,)
            assert module.running_mean.shape == module.running_var.shape == width
    assert sum(p.numel() for p in pruned.parameters()) == S.expected_parameter_count(expected)


def _channel_slices(group: ChannelGroup, position: int) -> tuple[frozenset, frozenset]:
    """(producer, consumer) (module, index) pairs of one channel of ``group``."""
    producers = frozenset((m.module, i) for m in group.producers() for i in m.indices[position])
    consumers = frozenset((m.module, i) for m in group.consumers() for i in m.indices[position])
    return producers, consumers


def assert_groups_partition_the_channels(groups: list[ChannelGroup], flow: S.ChannelFlow) -> None:
    """Each (module, role, index) in one group channel at most; each group channel is exactly one
    channel of the description, with the producers and consumers the description ties to it; every
    prunable channel is in a group and no fixed one is."""
    assert len({g.name for g in groups}) == len(groups), "group names repeat"
    uses = Counter(
        (m.module, m.role, i) for g in groups for m in g.members for idx in m.indices for i in idx
    )
    shared = [slot for slot, n in uses.items() if n > 1]
    assert not shared, f"(module, role, index) in two groups or channels: {shared[:5]}"

    found = {}
    for g in groups:
        assert all(len(m.indices) == g.size for m in g.members), f"{g.name}: ragged members"
        for p, root_index in enumerate(g.root_indices):
            bundle = flow.bundle(flow.layers[g.root].outputs[root_index])
            clash = bundle & found.keys()
            assert not clash, f"{g.name}[{p}] holds the channel of {found.get(min(clash))}"
            found.update((channel, f"{g.name}[{p}]") for channel in bundle)
            assert _channel_slices(g, p) == flow.members(bundle), (
                f"group {g.name} position {p} (root {g.root}[{root_index}]): (producers, consumers) "
                "differ from the ones the description ties together"
            )
    missing = flow.prunable_channels() - found.keys()
    assert not missing, f"prunable channels no group covers: {sorted(missing)[:5]}"
    frozen = found.keys() & flow.fixed_channels()
    assert not frozen, f"groups hold channels of the input, classes or ignored layers: {frozen}"


@PROFILE
@given(cnn=S.cnns())
def test_groups_partition_the_prunable_channels(cnn: S.BuiltCNN):
    groups = find_channel_groups(cnn.model, cnn.example_input)
    bundled = any(len(g.members[0].indices[0]) > 1 for g in groups)
    event(f"positions bundled by a grouped conv: {'yes' if bundled else 'no'}")
    assert_groups_partition_the_channels(groups, S.ChannelFlow(cnn.architecture))


# -- minimal examples that failed on the first surgery drafts, kept as regression tests ---------

PLAIN = dict(batchnorm=False, activation="none")


def _conv(cin: int, cout: int, groups: int = 1) -> S.ConvSpec:
    return S.ConvSpec(cin, cout, groups=groups, **PLAIN)


def _minimal_case(size: int, *blocks: S.Block, pooling: str = "avg") -> S.BuiltCNN:
    channels = blocks[-1].out_channels
    area = 1 if pooling == "avg" else size * size
    head = S.HeadSpec(channels, pooling, area, None, "none", 1)
    return S.BuiltCNN.of(S.Architecture(blocks[0].in_channels, size, blocks, head, seed=0))


def assert_groups_and_single_removals_exact(cnn: S.BuiltCNN) -> None:
    """Groups as the description says, and removing any one channel is exact."""
    groups = find_channel_groups(cnn.model, cnn.example_input)
    assert_groups_partition_the_channels(groups, S.ChannelFlow(cnn.architecture))
    for g in groups:
        for p in range(g.size if g.size > 1 else 0):
            plan = S.PrunePlan({g.name: (p,)})
            pruned = prune_model(cnn.model, groups, plan, cnn.example_input)
            difference = max_abs_difference(cnn.model, pruned, groups, plan, cnn.example_input)
            assert difference <= TOLERANCE, f"removing {g.name}[{p}]: off by {difference:.3g}"


CONCAT_1_2 = S.ConcatSpec((_conv(1, 2),))
GROUPS_EQUAL_OUT = S.ConcatSpec((_conv(1, 4), _conv(4, 2, groups=2)))


@pytest.mark.parametrize(
    "blocks, size, pooling",
    [
        # the conv's channels got no group: the concat counted as reading the model input
        pytest.param((CONCAT_1_2,), 4, "avg", id="concat-of-model-input"),
        # TraceError: Torch-Pruning could not size the pooled input of the concat
        pytest.param((S.PoolSpec(1), CONCAT_1_2), 4, "avg", id="concat-of-pooled-input"),
        # the branch conv was grouped with the stem's channels and left with 0 filters
        pytest.param(
            (_conv(1, 2), S.ConcatSpec((_conv(2, 1),))), 2, "flatten", id="flatten-after-concat"
        ),
        # ResNeXt's block: 1x1 → grouped 3x3 → 1x1, added to the stream
        pytest.param(
            (_conv(1, 4), S.ResidualSpec((_conv(4, 6), _conv(6, 6, groups=3), _conv(6, 4)))), 2, "avg",
            id="resnext-block",
        ),
        # a grouped conv reading cat([stream, branch]): bundles across two roots stay whole
        pytest.param(
            (_conv(1, 2), S.ConcatSpec((_conv(2, 2),)), _conv(4, 4, groups=2)), 2, "avg",
            id="grouped-conv-after-concat",
        ),
    ],
)
def test_minimal_regression_examples(blocks, size, pooling):
    assert_groups_and_single_removals_exact(_minimal_case(size, *blocks, pooling=pooling))


def test_a_grouped_conv_with_one_output_per_group_is_refused_with_the_fix():
    # Torch-Pruning takes groups == out_channels for a depthwise conv and ties wrong channels
    cnn = _minimal_case(1, _conv(1, 1), GROUPS_EQUAL_OUT, S.ConcatSpec((_conv(3, 3, groups=3),)))
    with pytest.raises(TraceError, match=r"'features.1.body.1.conv' .*groups=2 with one output but 2 inputs"):
        find_channel_groups(cnn.model, cnn.example_input)
