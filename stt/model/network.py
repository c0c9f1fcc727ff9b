"""STTModel: input projection -> nested layers -> optional output projection.

Input ``[B, T, F]`` features with their lengths, output ``[B, T', V]`` with the
lengths after every stride. Inside, activations are channel-first ``[B, C, T]``
because nearly every block is a convolution.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stt.model.blocks import BLOCKS, Dropout, apply_mask, length_mask
from stt.model.layer_config import LayerConfigError, load_layer_config

INPUT_PROJS = ("base", None)


def _input_proj(kind: str | None, input_size: int, width: int) -> nn.Module | None:
    if kind == "base":  # the design note's projection
        return nn.Sequential(Dropout(0.25), nn.Linear(input_size, width), nn.ReLU(inplace=True), nn.LayerNorm(width))
    return None


class Parallel(nn.Module):
    """One block: parallel branches whose outputs are concatenated on channels."""

    def __init__(self, branches: list[tuple[str, dict]]):
        super().__init__()
        self.branches = nn.ModuleList(BLOCKS[t].of(**kw) for t, kw in branches)

    def extra_repr(self) -> str:
        return f"concat of {len(self.branches)}" if len(self.branches) > 1 else ""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x ``[B, C, T]``, lengths ``[B]`` or None. Returns: ``([B, sum of branch widths, T'], lengths)``."""
        outs = [branch(x, lengths) for branch in self.branches]
        y = outs[0][0] if len(outs) == 1 else torch.cat([o[0] for o in outs], dim=1)  # [B, sum C_b, T']
        return y, outs[0][1]  # the validator guarantees every branch gives these lengths


class Layer(nn.Module):
    """Sequential blocks, with a residual around them when the layer keeps the shape."""

    def __init__(self, blocks: list, residual: bool):
        super().__init__()
        self.blocks = nn.ModuleList(Parallel(b) for b in blocks)
        self.residual = residual

    def extra_repr(self) -> str:
        return f"residual={self.residual}"

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x ``[B, C, T]``, lengths ``[B]`` or None. Returns: ``([B, C', T'], lengths after the strides)``."""
        y, out_lengths = x, lengths
        for block in self.blocks:
            y, out_lengths = block(y, out_lengths)
        return (x + y if self.residual else y), out_lengths


class STTModel(nn.Module):
    """A CTC acoustic model built from a nested layer config.

    Args:
        config: anything ``load_layer_config`` takes (path, YAML, nested list, LayerConfig).
        input_size: feature size F of the input ``[B, T, F]``.
        input_proj: ``"base"`` (Dropout 0.25, Linear(F, width), ReLU, LayerNorm) or
            None, in which case F must equal the first layer's input width.
        output_size: vocabulary size V for a final Linear, or None.
        residual: add each layer's input to its output when their shapes match
            (same width, stride 1).
    """

    def __init__(
        self,
        config,
        input_size: int = 512,
        input_proj: str | None = "base",
        output_size: int | None = None,
        residual: bool = True,
    ):
        super().__init__()
        if input_proj not in INPUT_PROJS:
            raise LayerConfigError(f"input_proj: unknown projection {input_proj!r}; valid: base, none")
        # without a projection the features enter the first layer directly: its width is the feature size
        cfg = load_layer_config(config, in_width=None if input_proj else input_size)
        self.config = cfg
        self.input_size, self.output_size, self.residual = input_size, output_size, residual
        self.input_proj = _input_proj(input_proj, input_size, cfg.in_width)
        self.layers = nn.ModuleList()
        for i, layer in enumerate(cfg.layers):
            c_in, c_out = cfg.layer_in_out(i)
            self.layers.append(Layer(layer, residual and c_in == c_out and cfg.layer_stride(i) == 1))
        self.output_proj = nn.Linear(cfg.out_width, output_size) if output_size is not None else None

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for each input length, through every stride."""
        return self.config.output_lengths(lengths)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model on a padded batch.

        Args:
            x: features ``[B, T, F]``.
            lengths: real frames per utterance ``[B]`` on x's device, or None when no
                utterance is padded (every mask is then skipped: the fast path).
        Returns:
            ``([B, T', V or C], [B])``: outputs and their lengths after every stride.
        """
        if self.input_proj is not None:
            x = self.input_proj(x)  # [B, T, C]
        x = apply_mask(x.transpose(1, 2), length_mask(lengths, x.size(1)))  # [B, C, T]
        for layer in self.layers:
            x, lengths = layer(x, lengths)
        x = x.transpose(1, 2)  # [B, T', C]
        if self.output_proj is not None:
            x = self.output_proj(x)  # [B, T', V]
        if lengths is None:
            lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        return x, lengths


def build_model(run, input_size: int, output_size: int | None) -> STTModel:
    """The model a run config describes, for ``input_size``-d features and ``output_size`` letters.

    Args:
        run: a run config (``stt.train.run_config.RunConfig``: its ``layers``, ``input_proj`` and ``residual``).
    """
    return STTModel(
        run.layers, input_size=input_size, input_proj=run.input_proj, output_size=output_size, residual=run.residual
    )
