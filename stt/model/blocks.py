"""The design note's blocks, length-aware.

Every block works on channel-first activations and carries the valid length of
each utterance: ``forward(x, lengths) -> (y, lengths)`` with ``x: [B, C, T]``.
Frames at or beyond an utterance's length are *padding*. The contract: a block
receives zeros there and returns zeros there (the model zeroes them once, after
its input projection). So every temporal convolution sees exactly the zeros a
lone utterance sees from the convolution's own padding, and BatchNorm leaves
padded frames out of its statistics. ``lengths=None`` means "no padding":
every mask is skipped and BatchNorm runs its fused kernel.

The blocks keep the design note's keywords so its configs load unchanged. Each
block type is one frozen config dataclass (its keys, defaults, types, ranges and
a line of doc per field), one module class built from it, and one line in
``BLOCKS``. The config loader, the length arithmetic, the search spaces and the
docs all read that table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

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
# block configs: one frozen dataclass per block type holds its keys, defaults, types, ranges and docs


class BlockConfigError(ValueError):
    """A block setting that cannot work; ``key`` is the field, the message says why (the loader adds the path)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def param(
    default=None,
    doc: str = "",
    *,
    required: bool = False,
    low: float | None = None,
    below: float | None = None,
    choices: tuple | None = None,
    same_pad: tuple[str, str | None] | None = None,
):
    """A block config field: its default, one line of documentation, and what the loader checks.

    Args:
        required: the config must give it (the block's input width is filled in from the previous block).
        low, below: the allowed range, ``low <= v < below`` (integers default to ``low=1``).
        choices: the only allowed values.
        same_pad: ``(kernel field, dilation field or None)``: a padding derived for "same" length, which
            the config may only repeat.
    """
    meta = dict(doc=doc, required=required, low=low, below=below, choices=choices, same_pad=same_pad)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class BlockConfig:
    """Base of the per-block configs. A block type is one config dataclass, one module class, one registry line.

    The config loader (``stt.model.layer_config``) reads the fields: unknown keys, types, ranges, required keys
    and derived paddings are checked from them, then :meth:`check` adds the block's own cross-field rules.
    The search space (``search.space``) reads :attr:`knobs`, :meth:`from_knobs` and :meth:`to_knobs`.
    """

    in_key: ClassVar[str] = "in_chan"  # the field that takes the previous block's width
    knobs: ClassVar[tuple[str, ...]] = ()  # the space's per-branch choices this block uses (kernel, dilation, ...)
    can_stride: ClassVar[bool] = False  # whether a layer's stride may be given to this block
    searchable: ClassVar[bool] = True  # offered as a branch type by search spaces
    width_doc: ClassVar[str] = ""  # the output width in words, for the docs (e.g. "out_chan / k")

    def __post_init__(self):
        for f in fields(self):  # "same" paddings left out are derived here (the loader checks given ones)
            spec = f.metadata["same_pad"]
            if spec and getattr(self, f.name) is None:
                dil = getattr(self, spec[1]) if spec[1] else 1
                object.__setattr__(self, f.name, same_pad(getattr(self, spec[0]), dil))

    def out_width(self) -> int:
        """Channels out of the block."""
        raise NotImplementedError

    def convs(self) -> list[ConvGeom]:
        """The block's temporal convolutions in order, for length and receptive-field arithmetic."""
        return []

    def check(self) -> None:
        """Cross-field rules beyond each field's own type and range; raise :class:`BlockConfigError`."""

    @classmethod
    def from_knobs(cls, width: int, stride: int, knobs: dict) -> dict:
        """The kwargs (without the input width) of a branch of model width ``width`` from a space's choices."""
        raise NotImplementedError(f"{cls.__name__} is not searchable")

    def to_knobs(self) -> dict:
        """What a space says about this branch: the inverse of :meth:`from_knobs`."""
        raise NotImplementedError(f"{type(self).__name__} is not searchable")

    @property
    def stride(self) -> int:
        return math.prod(g.stride for g in self.convs())

    def kwargs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_divides(cfg, key: str, of: dict[str, int]) -> None:
    n = getattr(cfg, key)
    for name, chans in of.items():
        if chans % n:
            raise BlockConfigError(key, f"{n} does not divide {name}{chans}")


def _check_glu(cfg, out_key: str = "out_chan") -> None:
    if cfg.k == 2 and getattr(cfg, out_key) % 2:
        raise BlockConfigError(out_key, f"{getattr(cfg, out_key)} is odd, but GLU (k: 2) halves it")


_K = "1: ReLU, 2: GLU, which halves the conv's channels"


@dataclass(frozen=True)
class ConvBlockConfig(BlockConfig):
    width_doc: ClassVar = "out_chan / k"
    knobs: ClassVar = ("kernel", "dilation", "dropout", "glu")
    can_stride: ClassVar = True

    in_chan: int = param(None, "input channels C (derived from the previous block)", required=True)
    out_chan: int = param(None, "conv output channels; the block outputs out_chan // k", required=True)
    kernel: int = param(3, "temporal kernel width")
    stride: int = param(1, "temporal stride")
    pad: int | None = param(
        None, "padding, derived for 'same' length: dil * (kernel - 1) // 2", same_pad=("kernel", "dil")
    )
    dil: int = param(1, "dilation")
    dropout: float = param(0.0, "dropout after the activation", low=0, below=1)
    groups: int = param(1, "conv groups (divides in_chan and out_chan)")
    k: int = param(1, _K, choices=(1, 2))

    def out_width(self) -> int:
        return self.out_chan // self.k

    def convs(self) -> list[ConvGeom]:
        return [ConvGeom(self.kernel, self.stride, self.pad, self.dil)]

    def check(self) -> None:
        _check_glu(self)
        _check_divides(self, "groups", {"in_chan ": self.in_chan, "out_chan ": self.out_chan})

    @classmethod
    def from_knobs(cls, width: int, stride: int, knobs: dict) -> dict:
        k = 2 if knobs["glu"] else 1  # GLU doubles the conv's output and halves it back to the width
        return dict(
            out_chan=width * k,
            kernel=knobs["kernel"],
            stride=stride,
            dil=knobs["dilation"],
            dropout=knobs["dropout"],
            k=k,
        )

    def to_knobs(self) -> dict:
        return dict(kernel=self.kernel, dilation=self.dil, dropout=self.dropout, glu=self.k == 2)


@dataclass(frozen=True)
class SeparableConvBlockConfig(BlockConfig):
    width_doc: ClassVar = "out_chan"
    knobs: ClassVar = ("kernel", "dilation", "dropout", "glu")
    can_stride: ClassVar = True

    in_chan: int = param(None, "input channels C (derived from the previous block)", required=True)
    out_chan: int = param(None, "output channels of the pointwise conv", required=True)
    kernel: int = param(3, "depthwise kernel width")
    stride: int = param(1, "depthwise stride")
    pad: int | None = param(
        None, "padding, derived for 'same' length: dil * (kernel - 1) // 2", same_pad=("kernel", "dil")
    )
    dil: int = param(1, "depthwise dilation")
    dropout: float = param(0.0, "dropout after each activation", low=0, below=1)
    k: int = param(1, "1: ReLU, 2: GLU (the depthwise conv doubles to 2C, GLU halves it back)", choices=(1, 2))

    def out_width(self) -> int:
        return self.out_chan

    def convs(self) -> list[ConvGeom]:
        return [ConvGeom(self.kernel, self.stride, self.pad, self.dil)]

    @classmethod
    def from_knobs(cls, width: int, stride: int, knobs: dict) -> dict:
        k = 2 if knobs["glu"] else 1  # GLU acts inside the block; the output stays at the width
        return dict(
            out_chan=width, kernel=knobs["kernel"], stride=stride, dil=knobs["dilation"], dropout=knobs["dropout"], k=k
        )

    to_knobs = ConvBlockConfig.to_knobs


@dataclass(frozen=True)
class AttentionConvBlockConfig(BlockConfig):
    width_doc: ClassVar = "in_chan"
    knobs: ClassVar = ("kernel", "dropout", "heads")

    in_chan: int = param(None, "channels C, in and out (derived from the previous block)", required=True)
    n_heads: int = param(8, "kernels, each shared by in_chan / n_heads channels")
    kernel: int = param(5, "kernel width (odd: 'same' length)")
    dropout: float = param(0.0, "DropConnect on the normalised kernels", low=0, below=1)
    pad: int | None = param(None, "padding, derived for 'same' length: (kernel - 1) // 2", same_pad=("kernel", None))
    bias: bool = param(True, "a bias per channel")

    def out_width(self) -> int:
        return self.in_chan

    def convs(self) -> list[ConvGeom]:
        return [ConvGeom(self.kernel, 1, self.pad, 1)]

    def check(self) -> None:
        _check_divides(self, "n_heads", {"": self.in_chan})

    @classmethod
    def from_knobs(cls, width: int, stride: int, knobs: dict) -> dict:
        return dict(n_heads=knobs["heads"], kernel=knobs["kernel"], dropout=knobs["dropout"])

    def to_knobs(self) -> dict:
        return dict(kernel=self.kernel, dropout=self.dropout, heads=self.n_heads)


@dataclass(frozen=True)
class ConvAttentionConvBlockConfig(BlockConfig):
    width_doc: ClassVar = "out_chan / k"
    knobs: ClassVar = ("kernel", "dilation", "dropout", "glu", "heads", "attn_kernel")
    can_stride: ClassVar = True

    in_chan: int = param(None, "input channels C (derived from the previous block)", required=True)
    out_chan: int = param(None, "conv output channels; the block outputs out_chan // k", required=True)
    kernel_conv: int = param(3, "conv kernel width")
    stride_conv: int = param(1, "conv stride")
    pad_conv: int | None = param(
        None, "conv padding, derived: dil_conv * (kernel_conv - 1) // 2", same_pad=("kernel_conv", "dil_conv")
    )
    dil_conv: int = param(1, "conv dilation")
    dropout_conv: float = param(0.0, "dropout after the conv's activation", low=0, below=1)
    groups: int = param(1, "conv groups (divides in_chan and out_chan)")
    k: int = param(1, _K, choices=(1, 2))
    n_heads: int = param(8, "lightweight-conv kernels (divides out_chan // k)")
    kernel_attn: int = param(5, "lightweight-conv kernel width (odd)")
    dropout_attn: float = param(0.0, "DropConnect on the lightweight-conv kernels", low=0, below=1)
    pad_attn: int | None = param(
        None, "lightweight-conv padding, derived: (kernel_attn - 1) // 2", same_pad=("kernel_attn", None)
    )
    bias: bool = param(True, "a bias per channel in the lightweight conv")

    def out_width(self) -> int:
        return self.out_chan // self.k

    def convs(self) -> list[ConvGeom]:
        return [
            ConvGeom(self.kernel_conv, self.stride_conv, self.pad_conv, self.dil_conv),
            ConvGeom(self.kernel_attn, 1, self.pad_attn, 1),
        ]

    def check(self) -> None:
        _check_glu(self)
        _check_divides(self, "groups", {"in_chan ": self.in_chan, "out_chan ": self.out_chan})
        _check_divides(self, "n_heads", {"": self.out_chan // self.k})

    def conv(self) -> ConvBlockConfig:
        return ConvBlockConfig(
            in_chan=self.in_chan,
            out_chan=self.out_chan,
            kernel=self.kernel_conv,
            stride=self.stride_conv,
            pad=self.pad_conv,
            dil=self.dil_conv,
            dropout=self.dropout_conv,
            groups=self.groups,
            k=self.k,
        )

    def attn(self) -> AttentionConvBlockConfig:
        return AttentionConvBlockConfig(
            in_chan=self.out_width(),
            n_heads=self.n_heads,
            kernel=self.kernel_attn,
            dropout=self.dropout_attn,
            pad=self.pad_attn,
            bias=self.bias,
        )

    @classmethod
    def from_knobs(cls, width: int, stride: int, knobs: dict) -> dict:
        k = 2 if knobs["glu"] else 1
        return dict(
            out_chan=width * k,
            kernel_conv=knobs["kernel"],
            stride_conv=stride,
            dil_conv=knobs["dilation"],
            dropout_conv=knobs["dropout"],
            k=k,
            n_heads=knobs["heads"],
            kernel_attn=knobs["attn_kernel"] or knobs["kernel"],
            dropout_attn=knobs["dropout"],
        )

    def to_knobs(self) -> dict:
        return dict(
            kernel=self.kernel_conv,
            dilation=self.dil_conv,
            dropout=self.dropout_conv,
            glu=self.k == 2,
            heads=self.n_heads,
            attn_kernel=self.kernel_attn,
        )


@dataclass(frozen=True)
class FeedForwardConfig(BlockConfig):
    width_doc: ClassVar = "output_size"
    in_key: ClassVar = "input_size"
    searchable: ClassVar = False  # a space adds it to merge parallel branches, never as a branch

    input_size: int = param(None, "input channels (derived: the sum of the previous block's branches)", required=True)
    output_size: int = param(None, "output channels", required=True)
    d_ff: int = param(2048, "hidden width")
    dropout: float = param(0.0, "dropout after each linear", low=0, below=1)

    def out_width(self) -> int:
        return self.output_size


@dataclass(frozen=True)
class JasperBlockConfig(BlockConfig):
    width_doc: ClassVar = "out_chan"
    knobs: ClassVar = ("kernel", "dilation", "dropout", "repeat", "separable", "se")
    can_stride: ClassVar = True

    in_chan: int = param(None, "input channels C (derived from the previous block)", required=True)
    out_chan: int = param(None, "output channels of every sub-module", required=True)
    repeat: int = param(1, "R: sub-modules of (conv -> BN -> ReLU -> dropout) in the block")
    kernel: int = param(11, "temporal kernel width of every sub-module")
    stride: int = param(1, "temporal stride, on the first sub-module (and the residual projection)")
    dil: int = param(1, "dilation of every sub-module")
    pad: int | None = param(
        None, "padding, derived for 'same' length: dil * (kernel - 1) // 2", same_pad=("kernel", "dil")
    )
    separable: bool = param(False, "time-channel separable convs (QuartzNet): depthwise -> pointwise -> BN")
    dropout: float = param(0.0, "dropout after each sub-module's ReLU", low=0, below=1)
    residual: bool = param(True, "add a 1x1 conv + BN projection of the block's input before the last ReLU")
    se: bool = param(False, "squeeze-and-excitation on the last sub-module's output (Citrinet)")
    se_reduction: int = param(8, "SE bottleneck: out_chan // se_reduction channels")
    se_context: int = param(
        0, "SE context: 0 = every valid frame of the utterance; N = a centred window of N frames", low=0
    )

    def out_width(self) -> int:
        return self.out_chan

    def convs(self) -> list[ConvGeom]:
        first = ConvGeom(self.kernel, self.stride, self.pad, self.dil)
        return [first] + [ConvGeom(self.kernel, 1, self.pad, self.dil)] * (self.repeat - 1)

    def check(self) -> None:
        if self.se and self.out_chan // self.se_reduction < 1:
            raise BlockConfigError(
                "se_reduction", f"{self.se_reduction} leaves no SE channels of out_chan {self.out_chan}"
            )
        if self.se_context and self.se_context % 2 == 0:
            raise BlockConfigError("se_context", f"{self.se_context} is even; a centred window needs an odd width")

    @classmethod
    def from_knobs(cls, width: int, stride: int, knobs: dict) -> dict:
        return dict(
            out_chan=width,
            repeat=knobs["repeat"],
            kernel=knobs["kernel"],
            stride=stride,
            dil=knobs["dilation"],
            separable=knobs["separable"],
            dropout=knobs["dropout"],
            se=knobs["se"],
        )

    def to_knobs(self) -> dict:
        return dict(
            kernel=self.kernel,
            dilation=self.dil,
            dropout=self.dropout,
            repeat=self.repeat,
            separable=self.separable,
            se=self.se,
        )


# ---------------------------------------------------------------------------
# blocks


class Block(nn.Module):
    """A block type: ``forward(x [B, C, T], lengths [B] | None) -> (y [B, C', T'], lengths)``.

    Built from its config dataclass ``Config``; ``Block.of(**kwargs)`` builds from the config's keywords.
    """

    Config: ClassVar[type[BlockConfig]]

    @classmethod
    def of(cls, **kwargs) -> Block:
        return cls(cls.Config(**kwargs))


class ConvBlock(Block):
    """Conv1d -> BatchNorm -> ReLU | GLU -> Dropout: ``[B, in_chan, T] -> [B, out_chan // k, T']``."""

    Config = ConvBlockConfig

    def __init__(self, cfg: ConvBlockConfig):
        super().__init__()
        self.cfg = cfg
        self.geom = cfg.convs()[0]
        self.conv = nn.Conv1d(
            cfg.in_chan,
            cfg.out_chan,
            cfg.kernel,
            stride=cfg.stride,
            padding=cfg.pad,
            dilation=cfg.dil,
            groups=cfg.groups,
        )
        self.norm = MaskedBatchNorm1d(cfg.out_chan)
        self.act = _activation(cfg.k)
        self.drop = Dropout(cfg.dropout)

    def extra_repr(self) -> str:
        c = self.cfg
        glu = f", glu: {c.out_chan}->{c.out_width()}" if c.k == 2 else ""
        return (
            f"{c.in_chan}->{c.out_width()}, kernel={c.kernel}, stride={c.stride}, dil={c.dil}, groups={c.groups}{glu}"
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x ``[B, in_chan, T]`` (zero padded), lengths ``[B]`` or None.
        Returns: ``([B, out_chan // k, T'], [B] or None)``.
        """
        y, lengths, mask = _masked_conv(self.conv, self.geom, x, lengths)  # [B, out_chan, T']
        y = self.drop(self.act(self.norm(y, mask)))  # [B, out_chan // k, T']
        return apply_mask(y, mask), lengths


class SeparableConvBlock(Block):
    """Depthwise conv -> BN -> ReLU | GLU -> Dropout -> pointwise conv -> BN -> ReLU -> Dropout.

    With GLU (``k=2``) the depthwise conv expands to ``2 * in_chan`` channels and GLU brings them back to
    ``in_chan`` before the pointwise conv (the design note fed ``k * in_chan`` channels into it after GLU
    had halved them). ``[B, in_chan, T] -> [B, out_chan, T']``.
    """

    Config = SeparableConvBlockConfig

    def __init__(self, cfg: SeparableConvBlockConfig):
        super().__init__()
        self.cfg = cfg
        self.geom = cfg.convs()[0]
        c, k = cfg.in_chan, cfg.k
        self.depthwise = nn.Conv1d(c, k * c, cfg.kernel, stride=cfg.stride, padding=cfg.pad, dilation=cfg.dil, groups=c)
        self.norm1 = MaskedBatchNorm1d(k * c)
        self.act1 = _activation(k)
        self.pointwise = nn.Conv1d(c, cfg.out_chan, 1)
        self.norm2 = MaskedBatchNorm1d(cfg.out_chan)
        self.drop = Dropout(cfg.dropout)

    def extra_repr(self) -> str:
        c = self.cfg
        glu = f", glu: {2 * c.in_chan}->{c.in_chan}" if c.k == 2 else ""
        return f"{c.in_chan}->{c.out_chan}, kernel={c.kernel}, stride={c.stride}, dil={c.dil}{glu}"

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x ``[B, in_chan, T]`` (zero padded), lengths ``[B]`` or None.
        Returns: ``([B, out_chan, T'], [B] or None)``.
        """
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


class AttentionConvBlock(Block):
    """Lightweight convolution (Wu et al. 2019): softmax-normalised kernels shared per head.

    Each of ``n_heads`` kernels is softmax-normalised over its width and shared by ``in_chan / n_heads``
    channels; DropConnect drops kernel weights in training. ``[B, C, T] -> [B, C, T]``.
    """

    Config = AttentionConvBlockConfig

    def __init__(self, cfg: AttentionConvBlockConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_heads, 1, cfg.kernel))  # [H, 1, K]
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(cfg.in_chan)) if cfg.bias else None

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"{c.in_chan}->{c.in_chan}, n_heads={c.n_heads}, kernel={c.kernel}, dropconnect={c.dropout}, bias={c.bias}"
        )

    def normalised_weight(self) -> torch.Tensor:
        w = F.softmax(self.weight, dim=-1)  # [H, 1, K]
        return F.dropout(w, self.cfg.dropout, training=self.training)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x ``[B, C, T]`` (zero padded), lengths ``[B]`` or None.
        Returns: ``([B, C, T], lengths)``.
        """
        c = self.cfg
        w = self.normalised_weight()  # [H, 1, K]
        # Channel c uses head c % H. The design note (and fairseq) reshape to [B*C/H, H, T] for one
        # grouped conv with H channels; a depthwise conv over the C channels with the head kernels
        # tiled to [C, 1, K] is the same sum and 3-4x faster (a tiny channel count starves the conv
        # kernels). The tiling's backward sums each head's gradient over its channels.
        tiled = w.repeat(c.in_chan // c.n_heads, 1, 1)  # [C, 1, K]
        y = F.conv1d(x, tiled, self.bias, padding=c.pad, groups=c.in_chan)  # [B, C, T]
        return apply_mask(y, length_mask(lengths, y.size(2))), lengths


class ConvAttentionConvBlock(Block):
    """A ConvBlock followed by a lightweight-convolution AttentionConvBlock.

    ``[B, in_chan, T] -> [B, out_chan // k, T']``.
    """

    Config = ConvAttentionConvBlockConfig

    def __init__(self, cfg: ConvAttentionConvBlockConfig):
        super().__init__()
        self.cfg = cfg
        self.conv = ConvBlock(cfg.conv())
        self.attn_conv = AttentionConvBlock(cfg.attn())

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x ``[B, in_chan, T]`` (zero padded), lengths ``[B]`` or None.
        Returns: ``([B, out_chan // k, T'], [B] or None)``.
        """
        return self.attn_conv(*self.conv(x, lengths))


class FeedForward(Block):
    """Linear -> ReLU -> Dropout -> Linear -> Dropout -> LayerNorm, on every frame.

    ``[B, input_size, T] -> [B, output_size, T]`` (channel-first like the other blocks; the design note's
    version took ``[B, T, C]``).
    """

    Config = FeedForwardConfig

    def __init__(self, cfg: FeedForwardConfig):
        super().__init__()
        self.cfg = cfg
        self.ff = nn.Sequential(
            nn.Linear(cfg.input_size, cfg.d_ff),
            nn.ReLU(inplace=True),
            Dropout(cfg.dropout),
            nn.Linear(cfg.d_ff, cfg.output_size),
            Dropout(cfg.dropout),
            nn.LayerNorm(cfg.output_size),
        )

    def extra_repr(self) -> str:
        c = self.cfg
        return f"{c.input_size}->{c.output_size}, d_ff={c.d_ff}, dropout={c.dropout}"

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x ``[B, input_size, T]`` (zero padded), lengths ``[B]`` or None.
        Returns: ``([B, output_size, T], lengths)``.
        """
        y = self.ff(x.transpose(1, 2)).transpose(1, 2)  # per-frame on [B, T, C], back to [B, C', T]
        return apply_mask(y, length_mask(lengths, y.size(2))), lengths


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation over the valid frames only (Citrinet): ``x * sigmoid(fc(mean of x))``.

    The mean is over every real frame of the utterance (``context=0``), or over a centred window of
    ``context`` frames, counting real frames only, so padding never dilutes it. ``[B, C, T] -> [B, C, T]``.
    """

    def __init__(self, channels: int, reduction: int, context: int = 0):
        super().__init__()
        self.context = context
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=False)
        )

    def extra_repr(self) -> str:
        return f"context={'utterance' if not self.context else self.context}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        m = torch.ones_like(x[:, :1]) if mask is None else mask.to(x.dtype)  # [B, 1, T]
        xm = x * m
        if not self.context:
            s = xm.sum(2, keepdim=True) / m.sum(2, keepdim=True).clamp_min(1.0)  # [B, C, 1]
        else:
            w, half = self.context, self.context // 2
            ones = torch.ones(x.size(1), 1, w, dtype=x.dtype, device=x.device)
            total = F.conv1d(xm, ones, padding=half, groups=x.size(1))  # [B, C, T]: windowed sums of real frames
            count = F.conv1d(m, ones[:1], padding=half)  # [B, 1, T]: real frames in each window
            s = total / count.clamp_min(1.0)
        gate = torch.sigmoid(self.fc(s.transpose(1, 2))).transpose(1, 2)  # [B, C, 1 or T]
        return x * gate


class JasperBlock(Block):
    """Jasper / QuartzNet / Citrinet residual block (NeMo's ``JasperBlock``).

    R sub-modules, each a conv (or a time-channel separable conv: depthwise -> pointwise, no bias) -> BN,
    then ReLU -> dropout on all but the last; optional squeeze-and-excitation on the last; then the residual,
    a 1x1 conv + BN projection of the block's input (strided like the block), is added before the last
    ReLU -> dropout. The stride is on the first sub-module (NeMo's Citrinet strides the last one,
    ``stride_last``: the same lengths and parameters). ``[B, in_chan, T] -> [B, out_chan, T']``.
    """

    Config = JasperBlockConfig

    def __init__(self, cfg: JasperBlockConfig):
        super().__init__()
        self.cfg = cfg
        self.geoms = cfg.convs()
        self.subs = nn.ModuleList()
        c_in = cfg.in_chan
        for g in self.geoms:
            if cfg.separable:
                conv = nn.Sequential(
                    nn.Conv1d(c_in, c_in, g.kernel, g.stride, g.pad, g.dil, groups=c_in, bias=False),  # depthwise
                    nn.Conv1d(c_in, cfg.out_chan, 1, bias=False),  # pointwise
                )
            else:
                conv = nn.Conv1d(c_in, cfg.out_chan, g.kernel, g.stride, g.pad, g.dil, bias=False)
            self.subs.append(nn.ModuleDict({"conv": conv, "norm": MaskedBatchNorm1d(cfg.out_chan)}))
            c_in = cfg.out_chan
        self.se = SqueezeExcite(cfg.out_chan, cfg.se_reduction, cfg.se_context) if cfg.se else None
        if cfg.residual:
            self.res_conv = nn.Conv1d(cfg.in_chan, cfg.out_chan, 1, stride=cfg.stride, bias=False)
            self.res_norm = MaskedBatchNorm1d(cfg.out_chan)
        self.drop = Dropout(cfg.dropout)

    def extra_repr(self) -> str:
        c = self.cfg
        kind = "separable" if c.separable else "conv"
        extra = (", se" + (f"(context={c.se_context})" if c.se_context else "")) if c.se else ""
        return (
            f"{c.in_chan}->{c.out_chan}, repeat={c.repeat}, {kind}, kernel={c.kernel}, stride={c.stride}, "
            f"dil={c.dil}, residual={c.residual}{extra}"
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x ``[B, in_chan, T]`` (zero padded), lengths ``[B]`` or None.
        Returns: ``([B, out_chan, T'], [B] or None)``.
        """
        y, out_lengths, mask = x, lengths, None
        for i, (sub, g) in enumerate(zip(self.subs, self.geoms)):
            y = sub["conv"](y)  # [B, out_chan, T'] (the separable pointwise conv cannot spread padding)
            out_lengths = conv_out_lengths(out_lengths, g.kernel, g.stride, g.pad, g.dil)
            mask = length_mask(out_lengths, y.size(2))
            y = sub["norm"](y, mask)
            if i < len(self.subs) - 1:  # the next conv must see zeros on padding again
                y = apply_mask(self.drop(F.relu(y, inplace=True)), mask)
        if self.se is not None:
            y = self.se(y, mask)
        if self.cfg.residual:
            y = y + self.res_norm(self.res_conv(x), mask)  # [B, out_chan, T']: same lengths (1x1, same stride)
        y = self.drop(F.relu(y, inplace=True))
        return apply_mask(y, mask), out_lengths


# The one table of block types: config name -> block class (whose ``Config`` describes its keys). The config
# loader, the model builder, the search spaces and the docs all read it; a new block type is one line here.
BLOCKS: dict[str, type[Block]] = {
    "conv_block": ConvBlock,
    "separable_conv_block": SeparableConvBlock,
    "attention_conv_block": AttentionConvBlock,
    "conv_attention_conv_block": ConvAttentionConvBlock,
    "feed_forward": FeedForward,
    "jasper_block": JasperBlock,
}


def block_config(block_type: str, kw: dict) -> BlockConfig:
    """The config object of one normalised branch ``(block_type, kwargs)``."""
    return BLOCKS[block_type].Config(**kw)


def block_table() -> str:
    """The Markdown table of block types (docs/library.md's, checked by a test)."""
    rows = ["| block type | keys (defaults) | output width |", "|---|---|---|"]
    for name, cls in BLOCKS.items():
        keys = []
        for f in fields(cls.Config):
            if f.metadata["same_pad"] or f.metadata["required"]:
                keys.append(f.name)
            else:
                keys.append(f"{f.name}={str(f.default).lower() if isinstance(f.default, bool) else f.default}")
        rows.append(f"| `{name}` | {', '.join(keys)} | {cls.Config.width_doc} |")
    return "\n".join(rows) + "\n"


def describe_blocks() -> str:
    """Every block type's keys with their defaults and one line each (``stt describe --blocks``)."""
    out = []
    for name, cls in BLOCKS.items():
        out.append(f"{name}: {(cls.__doc__ or '').strip().splitlines()[0]}")
        for f in fields(cls.Config):
            default = "required" if f.metadata["required"] else "derived" if f.metadata["same_pad"] else f.default
            out.append(f"  {f.name:<13} {default!s:<9} {f.metadata['doc']}")
    return "\n".join(out) + "\n"
