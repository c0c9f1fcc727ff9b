"""The design note's blocks, length-aware.

Every block works on channel-first activations and carries the valid length of
each utterance: ``forward(x, lengths) -> (y, lengths)`` with ``x: [B, C, T]``.
Frames at or beyond an utterance's length are *padding*. The contract: a block
receives zeros there and returns zeros there (the model zeroes them once, after
its input projection). So every temporal convolution sees exactly the zeros a
lone utterance sees from the convolution's own padding, and BatchNorm leaves
padded frames out of its statistics. ``lengths=None`` means "no padding":
every mask is skipped and BatchNorm runs its fused kernel.

The blocks keep the design note's constructor keywords so its configs load
unchanged. Each block class also describes itself to the config validator
(``PARAMS``, ``in_key``, ``out_width``, ``convs``) so that the validator, the
length arithmetic and the search all read one table, ``BLOCKS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# helpers


def length_mask(lengths: torch.Tensor | None, max_len: int) -> torch.Tensor | None:
    """``[B] -> [B, 1, max_len]`` bool mask, True on real frames (None: no padding)."""
    if lengths is None:
        return None
    t = torch.arange(max_len, device=lengths.device)
    return (t[None, :] < lengths[:, None]).unsqueeze(1)  # [B, 1, T]


def apply_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded frames of ``x [B, C, T]`` (a no-op without padding)."""
    return x if mask is None else x * mask


def conv_out_lengths(lengths, kernel: int, stride: int, pad: int, dil: int):
    """The length arithmetic of ``nn.Conv1d``, applied to each utterance's own length (ints or a tensor)."""
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor):
        return torch.div(lengths + 2 * pad - dil * (kernel - 1) - 1, stride, rounding_mode="floor") + 1
    return (lengths + 2 * pad - dil * (kernel - 1) - 1) // stride + 1


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool dropout mask for the CPU, True with probability ``1 - p`` (to 1/32768).

    One 64-bit draw gives four 16-bit lanes; each keeps its low 15 bits, which are uniform
    (``random_`` on int64 leaves only bit 63 at zero). A quarter of the generator calls of
    a float draw, and a sixth of the time of ``bernoulli_``.
    """
    n = math.prod(shape)
    lanes = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:n]  # [n] int16
    return (lanes.bitwise_and_(0x7FFF) >= round(p * 32768)).view(shape)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask on the CPU (:func:`keep_mask`).

    PyTorch's CPU dropout draws its mask with ``bernoulli_``, 15 % of a training
    step of the small config on 2 cores. Same distribution, same scaling, same
    name in ``print(model)``; other devices, and compiled graphs (which fuse their own
    RNG), use the native kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or torch.compiler.is_compiling():
            return super().forward(x)
        if self.p == 1.0:
            return x * 0.0
        return x * keep_mask(x.shape, self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))


def same_pad(kernel: int, dil: int = 1) -> int:
    """Padding that keeps the length (at stride 1) when ``dil * (kernel - 1)`` is even."""
    return dil * (kernel - 1) // 2


@dataclass(frozen=True)
class ConvGeom:
    """One temporal convolution inside a block, for length and receptive-field arithmetic."""

    kernel: int
    stride: int
    pad: int
    dil: int


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over ``[B, C, T]`` whose training statistics come from real frames only.

    In eval mode it is plain BatchNorm (running statistics are per-channel
    constants, so padding cannot leak). In training, padded frames would pull
    the mean towards zero and the variance down in proportion to how much of
    the batch is padding; here they are left out. Same parameters and buffers
    as ``nn.BatchNorm1d``, so checkpoints are interchangeable.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or mask is None:
            return super().forward(x)
        dtype, x = x.dtype, x.float()  # statistics in fp32 also under bf16 autocast
        m = mask.to(x.dtype)  # [B, 1, T]
        n = m.sum().clamp_min(1.0)
        xm = x * m  # padding zeroed, so plain sums are sums over real frames
        mean = xm.sum(dim=(0, 2)) / n  # [C]
        var = ((xm * xm).sum(dim=(0, 2)) / n - mean * mean).clamp_min(0.0)  # [C], biased
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                mom = self.momentum if self.momentum is not None else 0.1
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), mom)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), mom)
                self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(var + self.eps)  # [C]
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale + (self.bias if self.affine else 0.0)  # [C]
        # one fused pass; padded frames get `shift`, and every block zeroes them before they can spread
        return torch.addcmul(shift[None, :, None], x, scale[None, :, None]).to(dtype)


def _masked_conv(conv: nn.Conv1d, g: ConvGeom, x: torch.Tensor, lengths: torch.Tensor | None):
    """Convolve (x's padding is zero by contract); return ``(y, output lengths, output mask)``."""
    y = conv(x)
    lengths = conv_out_lengths(lengths, g.kernel, g.stride, g.pad, g.dil)
    return y, lengths, length_mask(lengths, y.size(2))


def _activation(k: int) -> nn.Module:
    # k=2 is the design note's GLU switch: the channels are halved after the conv. In place: its input
    # is BatchNorm's fresh output, which nothing else reads (saves an allocation per block).
    return nn.ReLU(inplace=True) if k == 1 else nn.GLU(dim=1)


# ---------------------------------------------------------------------------
# blocks


class ConvBlock(nn.Module):
    """Conv1d -> BatchNorm -> ReLU | GLU -> Dropout.

    Args:
        in_chan: input channels C.
        out_chan: conv output channels; the block outputs ``out_chan // k``.
        kernel, stride, pad, dil: the convolution's geometry (``pad`` is derived
            as ``dil * (kernel - 1) // 2`` by the config loader).
        dropout: dropout after the activation.
        groups: conv groups (must divide ``in_chan`` and ``out_chan``).
        k: 1 for ReLU, 2 for GLU.
    Shapes: ``[B, in_chan, T] -> [B, out_chan // k, T']``.
    """

    in_key = "in_chan"
    PARAMS = dict(in_chan=None, out_chan=None, kernel=3, stride=1, pad=None, dil=1, dropout=0.0, groups=1, k=1)

    def __init__(self, in_chan, out_chan, kernel=3, stride=1, pad=1, dil=1, dropout=0.0, groups=1, k=1):
        super().__init__()
        self.geom = ConvGeom(kernel, stride, pad, dil)
        self.conv = nn.Conv1d(in_chan, out_chan, kernel, stride=stride, padding=pad, dilation=dil, groups=groups)
        self.norm = MaskedBatchNorm1d(out_chan)
        self.act = _activation(k)
        self.drop = Dropout(dropout)

    @staticmethod
    def out_width(kw: dict) -> int:
        return kw["out_chan"] // kw["k"]

    @staticmethod
    def convs(kw: dict) -> list[ConvGeom]:
        return [ConvGeom(kw["kernel"], kw["stride"], kw["pad"], kw["dil"])]

    def forward(self, x, lengths):  # x: [B, C, T]
        y, lengths, mask = _masked_conv(self.conv, self.geom, x, lengths)  # [B, out_chan, T']
        y = self.drop(self.act(self.norm(y, mask)))  # [B, out_chan // k, T']
        return apply_mask(y, mask), lengths


class SeparableConvBlock(nn.Module):
    """Depthwise conv -> BN -> ReLU | GLU -> Dropout -> pointwise conv -> BN -> ReLU -> Dropout.

    With GLU (``k=2``) the depthwise conv expands to ``2 * in_chan`` channels
    and GLU brings them back to ``in_chan`` before the pointwise conv (the
    design note fed ``k * in_chan`` channels into it after GLU had halved them).
    Shapes: ``[B, in_chan, T] -> [B, out_chan, T']``.
    """

    in_key = "in_chan"
    PARAMS = dict(in_chan=None, out_chan=None, kernel=3, stride=1, pad=None, dil=1, dropout=0.0, k=1)

    def __init__(self, in_chan, out_chan, kernel=3, stride=1, pad=1, dil=1, dropout=0.0, k=1):
        super().__init__()
        self.geom = ConvGeom(kernel, stride, pad, dil)
        self.depthwise = nn.Conv1d(in_chan, k * in_chan, kernel, stride=stride, padding=pad, dilation=dil, groups=in_chan)
        self.norm1 = MaskedBatchNorm1d(k * in_chan)
        self.act1 = _activation(k)
        self.pointwise = nn.Conv1d(in_chan, out_chan, 1)
        self.norm2 = MaskedBatchNorm1d(out_chan)
        self.drop = Dropout(dropout)

    @staticmethod
    def out_width(kw: dict) -> int:
        return kw["out_chan"]

    convs = staticmethod(ConvBlock.convs)

    def forward(self, x, lengths):  # x: [B, C, T]
        y, lengths, mask = _masked_conv(self.depthwise, self.geom, x, lengths)  # [B, k*C, T']
        y = self.drop(self.act1(self.norm1(y, mask)))  # [B, C, T']
        y = self.pointwise(y)  # [B, out_chan, T'], pointwise: padding cannot spread
        y = self.drop(F.relu(self.norm2(y, mask), inplace=True))
        return apply_mask(y, mask), lengths


def lightweight_conv_reference(x: torch.Tensor, weight: torch.Tensor, pad: int) -> torch.Tensor:
    """Plain lightweight convolution, one channel at a time (for tests).

    Channel ``c`` uses the kernel of head ``c % H`` — the convention of the
    design note and of fairseq's ``LightweightConv1d`` (its ``view(-1, H, T)``).
    Args: x ``[B, C, T]``, weight ``[H, 1, K]`` already softmax-normalised.
    """
    n_heads = weight.size(0)
    out = [F.conv1d(x[:, c : c + 1], weight[c % n_heads : c % n_heads + 1], padding=pad) for c in range(x.size(1))]
    return torch.cat(out, dim=1)


class AttentionConvBlock(nn.Module):
    """Lightweight convolution (Wu et al. 2019): softmax-normalised kernels shared per head.

    Each of ``n_heads`` kernels is softmax-normalised over its width and shared
    by ``in_chan / n_heads`` channels; DropConnect drops kernel weights in
    training. Shapes: ``[B, C, T] -> [B, C, T]``.
    """

    in_key = "in_chan"
    PARAMS = dict(in_chan=None, n_heads=8, kernel=5, dropout=0.0, pad=None, bias=True)

    def __init__(self, in_chan, n_heads=8, kernel=5, dropout=0.0, pad=2, bias=True):
        super().__init__()
        self.in_chan, self.n_heads, self.kernel, self.pad, self.dropout = in_chan, n_heads, kernel, pad, dropout
        self.weight = nn.Parameter(torch.empty(n_heads, 1, kernel))
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(in_chan)) if bias else None

    @staticmethod
    def out_width(kw: dict) -> int:
        return kw["in_chan"]

    @staticmethod
    def convs(kw: dict) -> list[ConvGeom]:
        return [ConvGeom(kw["kernel"], 1, kw["pad"], 1)]

    def extra_repr(self) -> str:
        return f"in_chan={self.in_chan}, n_heads={self.n_heads}, kernel={self.kernel}, pad={self.pad}, dropconnect={self.dropout}"

    def normalised_weight(self) -> torch.Tensor:
        w = F.softmax(self.weight, dim=-1)  # [H, 1, K]
        return F.dropout(w, self.dropout, training=self.training)

    def forward(self, x, lengths):  # x: [B, C, T], zero padded
        w = self.normalised_weight()  # [H, 1, K]
        # Channel c uses head c % H. The design note (and fairseq) reshape to [B*C/H, H, T] for one
        # grouped conv with H channels; a depthwise conv over the C channels with the head kernels
        # tiled to [C, 1, K] is the same sum and 3-4x faster (a tiny channel count starves the conv
        # kernels). The tiling's backward sums each head's gradient over its channels.
        y = F.conv1d(x, w.repeat(self.in_chan // self.n_heads, 1, 1), self.bias, padding=self.pad,
                     groups=self.in_chan)  # [B, C, T]  # fmt: skip
        return apply_mask(y, length_mask(lengths, y.size(2))), lengths


class ConvAttentionConvBlock(nn.Module):
    """A ConvBlock followed by a lightweight-convolution AttentionConvBlock.

    Shapes: ``[B, in_chan, T] -> [B, out_chan // k, T']``.
    """

    in_key = "in_chan"
    PARAMS = dict(
        in_chan=None, out_chan=None, kernel_conv=3, stride_conv=1, pad_conv=None, dil_conv=1, dropout_conv=0.0,
        groups=1, k=1, n_heads=8, kernel_attn=5, dropout_attn=0.0, pad_attn=None, bias=True,
    )  # fmt: skip

    def __init__(self, in_chan, out_chan, kernel_conv=3, stride_conv=1, pad_conv=1, dil_conv=1, dropout_conv=0.0,
                 groups=1, k=1, n_heads=8, kernel_attn=5, dropout_attn=0.0, pad_attn=2, bias=True):  # fmt: skip
        super().__init__()
        self.conv = ConvBlock(in_chan, out_chan, kernel_conv, stride_conv, pad_conv, dil_conv, dropout_conv, groups, k)
        self.attn_conv = AttentionConvBlock(out_chan // k, n_heads, kernel_attn, dropout_attn, pad_attn, bias)

    @staticmethod
    def out_width(kw: dict) -> int:
        return kw["out_chan"] // kw["k"]

    @staticmethod
    def convs(kw: dict) -> list[ConvGeom]:
        return [
            ConvGeom(kw["kernel_conv"], kw["stride_conv"], kw["pad_conv"], kw["dil_conv"]),
            ConvGeom(kw["kernel_attn"], 1, kw["pad_attn"], 1),
        ]

    def forward(self, x, lengths):
        return self.attn_conv(*self.conv(x, lengths))


class FeedForward(nn.Module):
    """Linear -> ReLU -> Dropout -> Linear -> Dropout -> LayerNorm, on every frame.

    Shapes: ``[B, input_size, T] -> [B, output_size, T]`` (channel-first like
    the other blocks; the design note's version took ``[B, T, C]``).
    """

    in_key = "input_size"
    PARAMS = dict(input_size=None, output_size=None, d_ff=2048, dropout=0.0)

    def __init__(self, input_size, output_size, d_ff=2048, dropout=0.0):
        super().__init__()
        self.ff = nn.Sequential(
            nn.Linear(input_size, d_ff),
            nn.ReLU(inplace=True),
            Dropout(dropout),
            nn.Linear(d_ff, output_size),
            Dropout(dropout),
            nn.LayerNorm(output_size),
        )

    @staticmethod
    def out_width(kw: dict) -> int:
        return kw["output_size"]

    @staticmethod
    def convs(kw: dict) -> list[ConvGeom]:
        return []

    def forward(self, x, lengths):  # x: [B, C, T]
        y = self.ff(x.transpose(1, 2)).transpose(1, 2)  # per-frame on [B, T, C], back to [B, C', T]
        return apply_mask(y, length_mask(lengths, y.size(2))), lengths


# The one table of block types: config name -> class. The config validator, the
# model builder and the search spaces all read it.
BLOCKS: dict[str, type[nn.Module]] = {
    "conv_block": ConvBlock,
    "separable_conv_block": SeparableConvBlock,
    "attention_conv_block": AttentionConvBlock,
    "conv_attention_conv_block": ConvAttentionConvBlock,
    "feed_forward": FeedForward,
}


def block_stride(block_type: str, kw: dict) -> int:
    return math.prod(g.stride for g in BLOCKS[block_type].convs(kw))
