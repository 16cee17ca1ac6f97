"""Layers of ours that models and the surgery both use: the option-A shortcut.

:class:`PadShortcut` is the CIFAR ResNets' parameter-free shortcut (He et al. 2016, option A).
It lives here, not in the model file, so that the surgery (which teaches Torch-Pruning to prune
it) needs no model's module, and any model may use it.
"""

from __future__ import annotations

import torch
from torch import nn


class _PlaceChannels(torch.autograd.Function):
    """out[:, positions[i]] = x[:, i, ::stride, ::stride]; every other output channel is zero.

    One autograd node from input to output, so that graph tracers (Torch-Pruning) see the shortcut
    as a single operation whose input and output channels are linked by ``positions``.
    """

    @staticmethod
    def forward(ctx, x, positions: torch.Tensor, out_channels: int, stride: int):
        ctx.save_for_backward(positions)
        ctx.in_shape = x.shape
        ctx.stride = stride
        sub = x[:, :, ::stride, ::stride]
        out = x.new_zeros((x.shape[0], out_channels) + tuple(sub.shape[2:]))
        # out of place: the ONNX exporter dropped the in-place write and exported all zeros
        return out.index_copy(1, positions, sub)

    @staticmethod
    def backward(ctx, grad_out):
        (positions,) = ctx.saved_tensors
        grad_in = grad_out.new_zeros(ctx.in_shape)
        grad_in[:, :, :: ctx.stride, :: ctx.stride] = grad_out[:, positions]
        return grad_in, None, None, None


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by ``stride`` and place the input channels among
    zero channels of the wider output.

    The original places ``C_in`` channels after ``pad`` zero channels and before ``pad`` more.
    ``positions`` generalises that (output channel of each input channel) so that the shortcut
    stays exact after channels of either side are pruned; it is a plain attribute, not a buffer,
    so state dicts carry no key for it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        pad = (out_channels - in_channels) // 2
        self.stride = stride
        self.out_channels = out_channels
        self.positions: list[int] = list(range(pad, pad + in_channels))

    @property
    def in_channels(self) -> int:
        return len(self.positions)

    def forward(self, x):
        index = torch.as_tensor(self.positions, dtype=torch.long, device=x.device)
        return _PlaceChannels.apply(x, index, self.out_channels, self.stride)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, stride={self.stride}"
