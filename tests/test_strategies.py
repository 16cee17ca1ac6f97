"""The strategies draw what they claim, and the channel oracle knows its known answers."""

from __future__ import annotations

import collections

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.vendor.pretty import pretty

from pytest_prune import strategies as S
from pytest_prune.groups import ChannelGroup
from pytest_prune.plan import PrunePlan

SAMPLE = 150


def sample(strategy: st.SearchStrategy, n: int = SAMPLE) -> list:
    """``n`` draws of ``strategy``, the same on every run (derandomized, no database)."""
    drawn = []

    @settings(
        max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate]
    )
    @given(strategy)
    def collect(value):
        drawn.append(value)

    collect()
    return drawn


@pytest.fixture(scope="module")
def drawn_architectures() -> list[S.Architecture]:
    return sample(S.architectures())


def _convs(block: S.Block):
    if isinstance(block, S.ConvSpec):
        yield block
    elif isinstance(block, (S.ResidualSpec, S.ConcatSpec)):
        yield from block.body
        if isinstance(block, S.ResidualSpec) and block.projection is not None:
            yield block.projection


def _features(architecture: S.Architecture) -> set[str]:
    found = set()
    blocks = architecture.blocks
    for block, following in zip(blocks, blocks[1:] + (None,)):
        if isinstance(block, S.ResidualSpec):
            found.add("residual-projection" if block.projection else "residual-identity")
        elif isinstance(block, S.ConcatSpec):
            found.add("concat")
        elif isinstance(block, S.PoolSpec):
            found.add(f"pool-{block.kind}")
        elif isinstance(block, S.SharedSpec):
            found.add("shared")
        elif isinstance(block, S.UpSpec):
            found.add("transposed")
        if (
            isinstance(block, S.ConvSpec)
            and block.depthwise
            and isinstance(following, S.ConvSpec)
            and following.kernel_size == 1
            and following.groups == 1
        ):
            found.add("depthwise-separable")
        for conv in _convs(block):
            found.add("depthwise" if conv.depthwise else "grouped" if conv.grouped else "plain")
            found.add("bias" if conv.bias else "no-bias")
            found.add("batchnorm" if conv.batchnorm else "no-batchnorm")
            found.add(f"act-{conv.activation}")
            if conv.stride == 2:
                found.add("stride-2")
    head = architecture.head
    found.add(f"head-{head.pooling}" + ("-map" if head.area > 1 else ""))
    found.add("hidden-linear" if head.hidden is not None else "no-hidden-linear")
    return found


EVERY_FEATURE = {
    "residual-identity", "residual-projection", "concat", "pool-max", "pool-avg",
    "depthwise", "depthwise-separable", "grouped", "plain", "bias", "no-bias",
    "batchnorm", "no-batchnorm", "stride-2", "head-avg", "head-max", "head-flatten-map",
    "hidden-linear", "no-hidden-linear", "shared", "transposed",
} | {f"act-{a}" for a in S.ACTIVATIONS}  # fmt: skip


def test_every_building_block_occurs_in_a_sample_of_architectures(drawn_architectures):
    counts = collections.Counter(f for a in drawn_architectures for f in _features(a))
    rare = {f: counts[f] for f in EVERY_FEATURE if counts[f] < SAMPLE // 50}
    assert not rare, f"features drawn fewer than {SAMPLE // 50} times in {SAMPLE}: {rare}"


def test_architectures_stay_tiny_and_consistent(drawn_architectures):
    for a in drawn_architectures:
        assert a.batch == 2 and 1 <= a.size <= S.MAX_SIZE and 1 <= a.in_channels <= 3
        channels, size = a.in_channels, a.size
        for block in a.blocks:
            assert block.in_channels == channels
            assert block.out_channels <= S.MAX_CHANNELS and S.block_stride(block) in (1, 2)
            for conv in _convs(block):
                assert conv.in_channels % conv.groups == 0 and conv.out_channels % conv.groups == 0
            channels, size = block.out_channels, S.output_size(block, size)
            assert size >= 1
        assert a.head.channels == channels
        flattened_area = size * size if size <= 4 else 4  # larger maps are pooled to 2x2 first
        assert a.head.area == (flattened_area if a.head.pooling == "flatten" else 1)


@settings(max_examples=40, deadline=None)
@given(cnn=S.cnns())
def test_built_models_run_on_their_example_input(cnn):
    assert tuple(cnn.example_input.shape) == cnn.architecture.input_shape()
    for training in (True, False):
        out = cnn.model.train(training)(cnn.example_input)
        assert out.shape == (2, cnn.architecture.head.classes)
        assert torch.isfinite(out).all()


@settings(max_examples=40, deadline=None)
@given(architecture=S.architectures())
def test_the_channel_oracle_agrees_with_the_built_dense_model(architecture):
    model = S.build(architecture)
    shapes = S.ChannelFlow(architecture).shapes()
    assert S.measured_shapes(model) == shapes
    assert {k: tuple(p.shape) for k, p in model.named_parameters()} == S.parameter_shapes(shapes)
    assert S.expected_parameter_count(shapes) == sum(p.numel() for p in model.parameters())


@settings(max_examples=20, deadline=None)
@given(architecture=S.architectures())
def test_build_is_deterministic_and_batchnorm_is_not_at_its_defaults(architecture):
    a, b = S.build(architecture), S.build(architecture)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(S.example_input(architecture), S.example_input(architecture))
    for bn in (m for m in a.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        # a masked channel's BatchNorm shift would leak a constant: it must be non-zero here
        assert (bn.bias != 0).all() and (bn.running_mean != 0).all()
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))


def test_falsifying_examples_print_as_code_that_rebuilds_them(drawn_architectures):
    architecture = drawn_architectures[-1]
    text = pretty(S.BuiltCNN.of(architecture))
    assert text.startswith("BuiltCNN.of(Architecture(")
    rebuilt = eval(text, vars(S))  # noqa: S307 - our own repr of our own dataclasses
    assert rebuilt.architecture == architecture


def test_pruning_cases_print_as_code_that_rebuilds_them(drawn_architectures):
    architecture = drawn_architectures[-1]
    case = S.PruningCase.of(architecture, training=False)
    text = pretty(case)
    assert text.startswith("PruningCase.of(Architecture(")
    rebuilt = eval(text, vars(S))  # noqa: S307 - our own repr of our own dataclasses
    assert (rebuilt.architecture, rebuilt.training) == (architecture, False)
    assert rebuilt.plan == S.PrunePlan()
    assert rebuilt.groups == case.groups and not rebuilt.model.training


def _fake_groups(sizes: list[int]) -> list[ChannelGroup]:
    return [ChannelGroup(f"g{i}", f"m{i}", tuple(range(s)), ()) for i, s in enumerate(sizes)]


def test_channel_choices_keep_a_channel_and_reach_both_extremes():
    sizes = [1, 2, 3, 8, 16]
    groups = _fake_groups(sizes)
    plans = sample(S.channel_choices(groups), n=200)
    kinds = collections.Counter()
    for plan in plans:
        assert isinstance(plan, PrunePlan) and set(plan.remove) == {g.name for g in groups}
        for g in groups:
            removed = plan.remove[g.name]
            assert list(removed) == sorted(set(removed)) and all(0 <= p < g.size for p in removed)
            assert len(plan.kept(g)) >= 1
            if g.size > 1:
                maximal = len(removed) == g.size - 1
                kinds["empty" if not removed else "maximal" if maximal else "partial"] += 1
    assert min(kinds["empty"], kinds["maximal"], kinds["partial"]) >= 50, kinds


# -- the oracle on hand-written architectures -------------------------------------------------

RELU = "relu"
HEAD = S.HeadSpec(4, "avg", 1, None, "none", 2)


def _arch(*blocks: S.Block, head: S.HeadSpec = HEAD, in_channels: int = 3) -> S.Architecture:
    return S.Architecture(in_channels, 8, tuple(blocks), head, seed=0)


def _group(name: str, root: str, size: int) -> ChannelGroup:
    return ChannelGroup(name, root, tuple(range(size)), ())


def test_oracle_ties_an_identity_residual_to_the_producer_before_it():
    stem = S.ConvSpec(3, 4)
    block = S.ResidualSpec((S.ConvSpec(4, 4), S.ConvSpec(4, 4, activation="none")), None)
    flow = S.ChannelFlow(_arch(stem, block))
    for k in range(4):
        ch = flow.channel(("features.0.conv", k))
        assert flow.channel(("features.1.body.1.conv", k)) == ch
        producers, consumers = flow.members(ch)
        assert producers == {
            ("features.0.conv", k), ("features.0.bn", k),
            ("features.1.body.1.conv", k), ("features.1.body.1.bn", k),
        }  # fmt: skip
        assert consumers == {("features.1.body.0.conv", k), ("head.classifier", k)}
    assert flow.channel(("features.1.body.0.conv", 0)) != flow.channel(("features.0.conv", 0))
    # removing channel 2 of the stream narrows both producers, the body's input and the head
    shapes = flow.shapes({flow.channel(("features.0.conv", 2))})
    assert shapes["features.0.conv"].out_width == shapes["features.1.body.1.bn"].out_width == 3
    assert shapes["features.1.body.0.conv"].in_width == shapes["head.classifier"].in_width == 3
    assert shapes["features.1.body.0.conv"].out_width == 4


def test_oracle_fixes_channels_tied_to_the_input_or_the_classes():
    block = S.ResidualSpec((S.ConvSpec(3, 3),), None)
    flow = S.ChannelFlow(_arch(block, head=S.HeadSpec(3, "avg", 1, None, "none", 2)))
    assert flow.prunable_channels() == set()
    assert flow.channel(("features.0.body.0.conv", 1)) == flow.channel(("<input>", 1))


def test_oracle_offsets_concatenated_channels_and_a_depthwise_conv_follows_its_input():
    stem = S.ConvSpec(3, 2)
    dense = S.ConcatSpec((S.ConvSpec(2, 2, groups=2),))  # depthwise: carries the stem's channels
    head = S.HeadSpec(4, "flatten", 4, 5, RELU, 2)
    flow = S.ChannelFlow(_arch(stem, dense, S.ConvSpec(4, 4), head=head))
    conv = flow.layers["features.2.conv"]
    stem_ch = [flow.channel(("features.0.conv", k)) for k in range(2)]
    assert [flow.channel(n) for n in conv.inputs] == stem_ch + stem_ch
    assert flow.layers["features.1.body.0.conv"].depthwise
    shapes = flow.shapes({stem_ch[1]})
    depthwise = S.LayerShape("conv", 1, 1, groups=1, kernel_size=3, bias=False)
    assert shapes["features.1.body.0.conv"] == depthwise
    assert shapes["features.2.conv"].in_width == 2  # position 1 and 3 of the concat are gone
    # the hidden linear reads 4 spatial positions of every channel, channel-major
    hidden = flow.layers["head.hidden"]
    assert hidden.inputs[:8] == tuple(n for n in conv.outputs[:2] for _ in range(4))
    head_ch = flow.channel(conv.outputs[1])
    assert flow.shapes({head_ch})["head.hidden"].in_width == 12


def test_oracle_bundles_the_same_offset_of_every_group_of_a_grouped_conv():
    stem = S.ConvSpec(3, 4)
    grouped = S.ConvSpec(4, 6, kernel_size=1, groups=2)  # 2 inputs, 3 outputs per group
    dw, pw = S.ConvSpec(6, 6, groups=6), S.ConvSpec(6, 5, kernel_size=1)
    architecture = _arch(stem, grouped, dw, pw, head=S.HeadSpec(5, "avg", 1, None, "none", 2))
    flow = S.ChannelFlow(architecture)
    stem_ch = [flow.channel(("features.0.conv", k)) for k in range(4)]
    assert flow.bundle(stem_ch[0]) == {stem_ch[0], stem_ch[2]}
    assert flow.bundle(stem_ch[3]) == {stem_ch[1], stem_ch[3]}
    out = [flow.channel(("features.1.conv", k)) for k in range(6)]
    assert flow.bundle(out[4]) == {out[1], out[4]}
    assert len(flow.prunable_channels()) == 4 + 6 + 5
    # removing one bundle of the grouped conv's outputs: one filter per group, one column of pw
    shapes = flow.shapes(flow.bundle(out[1]))
    assert shapes["features.1.conv"] == S.LayerShape("conv", 4, 4, groups=2, kernel_size=1, bias=False)
    assert shapes["features.3.conv"].in_width == 4
    producers, consumers = flow.members(flow.bundle(stem_ch[0]))
    assert producers == {("features.0.conv", 0), ("features.0.conv", 2), ("features.0.bn", 0), ("features.0.bn", 2)}
    assert consumers == {("features.1.conv", 0), ("features.1.conv", 2)}


def test_oracle_keeps_a_bundle_that_joins_channels_of_two_roots_or_the_input():
    # cat([x, conv(x)]) → grouped conv with 2 groups: each bundle joins an image channel and a
    # channel of the body's conv, so nothing the grouped conv reads can go
    concat = S.ConcatSpec((S.ConvSpec(2, 2),))
    grouped = S.ConvSpec(4, 4, kernel_size=1, groups=2)
    architecture = _arch(concat, grouped, in_channels=2, head=S.HeadSpec(4, "avg", 1, None, "none", 2))
    flow = S.ChannelFlow(architecture)
    body = {flow.channel(("features.0.body.0.conv", k)) for k in range(2)}
    assert not body & flow.prunable_channels()
    assert {flow.channel(("features.1.conv", k)) for k in range(4)} <= flow.prunable_channels()


def test_oracle_locates_removed_channels_through_group_roots():
    stem = S.ConvSpec(3, 4)
    flow = S.ChannelFlow(_arch(stem, S.ConvSpec(4, 4)))
    # a group whose channel order differs from the root's output order
    group = ChannelGroup("g", "features.0.conv", (3, 1, 0, 2), ())
    removed = flow.removed_channels([group], PrunePlan({"g": (0, 1)}))
    assert removed == {flow.channel(("features.0.conv", 3)), flow.channel(("features.0.conv", 1))}
    with pytest.raises(ValueError, match="not a conv, linear or BatchNorm"):
        flow.removed_channels([_group("h", "features.0.act", 4)], PrunePlan({"h": (0,)}))


def test_expected_parameter_count_counts_weights_biases_and_batchnorm():
    shapes = {
        "c": S.LayerShape("conv", 4, 6, groups=2, kernel_size=3, bias=True),
        "b": S.LayerShape("batchnorm", 6, 6),
        "l": S.LayerShape("linear", 6, 2),
    }
    assert S.expected_parameter_count(shapes) == 6 * 2 * 9 + 6 + 2 * 6 + 6 * 2 + 2


def test_profiles_are_registered():
    S.register_profiles()
    ci = settings.get_profile("ci")
    assert ci.max_examples >= 200 and ci.derandomize and ci.deadline is None
    assert ci.suppress_health_check == ()
    assert settings.get_profile("dev").max_examples < ci.max_examples


def test_selected_profile_follows_the_environment(monkeypatch):
    monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert S.selected_profile() == "dev"
    monkeypatch.setenv("CI", "true")
    assert S.selected_profile() == "ci"
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "dev")
    assert S.selected_profile() == "dev"

