"""Tucker-2 of one conv: exact at full rank and on kernels of low multilinear rank; sizes by formula."""

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pytest_prune.decompose import DecompositionError, decompose_conv
from pytest_prune.measure.macs import count_model

@dataclass(frozen=True)
class ConvCase:
    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    bias: bool
    size: tuple[int, int]  # input H, W
    seed: int

    def output_size(self) -> tuple[int, int]:
        # PyTorch's documented Conv2d output size, written out here so as not to trust the layer.
        return tuple(
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, p, d, k, s in zip(self.size, self.padding, self.dilation, self.kernel, self.stride)
        )

    def build(self) -> nn.Conv2d:
        # Made on the meta device and filled from a seeded generator: the global RNG is left alone.
        conv = nn.Conv2d(
            self.c_in, self.c_out, self.kernel, self.stride, self.padding, self.dilation,
            bias=self.bias, device="meta",
        ).to_empty(device="cpu")
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for parameter in conv.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        return conv

    def example_input(self, batch: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + 1)
        return torch.randn((batch, self.c_in, *self.size), generator=generator)


@st.composite
def conv_cases(draw) -> ConvCase:
    pair = lambda low, high: st.tuples(st.integers(low, high), st.integers(low, high))  # noqa: E731
    kernel, stride = draw(pair(1, 5)), draw(pair(1, 3))
    padding, dilation = draw(pair(0, 2)), draw(pair(1, 2))
    # The smallest input that still gives one output position, then a few more.
    least = [max(1, d * (k - 1) + 1 - 2 * p) for k, p, d in zip(kernel, padding, dilation)]
    size = tuple(draw(st.integers(n, n + 8)) for n in least)
    return ConvCase(
        draw(st.integers(1, 12)), draw(st.integers(1, 12)), kernel, stride, padding, dilation,
        draw(st.booleans()), size, draw(st.integers(0, 2**16)),
    )


def relative_max_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return float((result - reference).abs().max() / reference.abs().max().clamp_min(1e-12))


@settings(deadline=None)  # the rest from the active profile
@given(case=conv_cases())
def test_full_rank_reproduces_the_conv(case: ConvCase):
    conv = case.build()
    cascade = decompose_conv(conv, (case.c_out, case.c_in))
    x = case.example_input()
    with torch.no_grad():
        reference, result = conv(x), cascade(x)
    assert result.shape == reference.shape
    assert result.dtype == torch.float32
    assert relative_max_error(result, reference) <= 1e-4


@settings(deadline=None)  # the rest from the active profile
@given(case=conv_cases(), data=st.data())
def test_any_rank_has_the_sizes_of_the_formula_and_is_exact_on_a_kernel_of_that_rank(case, data):
    r_out = data.draw(st.integers(1, case.c_out), label="R_out")
    r_in = data.draw(st.integers(1, case.c_in), label="R_in")
    conv = case.build()
    # W = G ×₀ A ×₁ B has multilinear rank ≤ (R_out, R_in) on the channel modes, so the cascade at
    # those ranks must reproduce it: this checks where each factor goes, below full rank too.
    generator = torch.Generator().manual_seed(case.seed + 2)
    core = torch.randn((r_out, r_in, *case.kernel), generator=generator, dtype=torch.float64)
    a = torch.randn((case.c_out, r_out), generator=generator, dtype=torch.float64)
    b = torch.randn((case.c_in, r_in), generator=generator, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("oirs,Oo,Ii->OIrs", core, a, b))
    cascade = decompose_conv(conv, (r_out, r_in))

    first, middle, last = cascade
    assert [type(m) for m in cascade] == [nn.Conv2d] * 3
    assert (first.in_channels, first.out_channels, first.kernel_size) == (case.c_in, r_in, (1, 1))
    assert (middle.in_channels, middle.out_channels, middle.kernel_size) == (r_in, r_out, case.kernel)
    assert (middle.stride, middle.padding, middle.dilation) == (case.stride, case.padding, case.dilation)
    assert (last.in_channels, last.out_channels, last.kernel_size) == (r_out, case.c_out, (1, 1))
    assert first.bias is None and middle.bias is None and (last.bias is not None) == case.bias

    kh, kw = case.kernel
    bias = case.c_out if case.bias else 0
    params = case.c_in * r_in + r_in * r_out * kh * kw + r_out * case.c_out + bias
    assert sum(p.numel() for p in cascade.parameters()) == params

    (h_in, w_in), (h_out, w_out) = case.size, case.output_size()
    # The first 1x1 conv runs on every input position, the other two on every output position.
    macs = h_in * w_in * case.c_in * r_in + h_out * w_out * (r_in * r_out * kh * kw + r_out * case.c_out)
    x = case.example_input(batch=1)
    assert count_model(cascade, x).macs == macs
    with torch.no_grad():
        result, reference = cascade(x), conv(x)
    assert result.shape == (1, case.c_out, h_out, w_out)
    assert relative_max_error(result, reference) <= 1e-4


def test_same_conv_and_ranks_give_the_same_weights():
    conv = ConvCase(6, 9, (3, 3), (1, 1), (1, 1), (1, 1), True, (8, 8), seed=3).build()
    first, second = decompose_conv(conv, (4, 3)), decompose_conv(conv, (4, 3))
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_tensorly_backend_is_left_as_it_was():
    tensorly = pytest.importorskip("tensorly")
    before = tensorly.get_backend()
    decompose_conv(nn.Conv2d(4, 4, 3), (2, 2))
    assert tensorly.get_backend() == before


def test_training_mode_and_padding_mode_carry_over():
    conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode="circular").eval()
    cascade = decompose_conv(conv, (5, 3))
    assert not any(m.training for m in cascade.modules())
    assert cascade[1].padding_mode == "circular"
    x = torch.randn(1, 3, 6, 7)
    with torch.no_grad():
        assert relative_max_error(cascade(x), conv(x)) <= 1e-4


@pytest.mark.parametrize(
    "conv, ranks, message",
    [
        (nn.Conv2d(4, 4, 3, groups=2), (2, 2), "groups=2"),
        (nn.Conv2d(4, 4, 3, groups=4), (2, 2), "groups=4"),
        (nn.Conv1d(4, 4, 3), (2, 2), "Conv1d"),
        (nn.Conv2d(4, 6, 3), (7, 2), "1 <= R_out <= C_out"),
        (nn.Conv2d(4, 6, 3), (2, 0), "1 <= R_in <= C_in"),
        (nn.Conv2d(4, 6, 3), (2,), "two integers"),
    ],
)
def test_bad_input_names_the_problem(conv, ranks, message):
    with pytest.raises(DecompositionError, match=message):
        decompose_conv(conv, ranks)
