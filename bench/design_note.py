"""The design note's model, as written there: the reference step the benches compare against.

Its blocks are unmasked and take no lengths; ``[B, T, C]`` activations are
permuted around every convolution; ReLUs are in place. Only the bugs that
stop it running are fixed (SeparableConvBlock's pointwise input width after
GLU), nothing else.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _NoteConv(nn.Module):
    def __init__(self, in_chan, out_chan, kernel=3, stride=1, pad=1, dil=1, dropout=0.0, groups=1, k=1, **kw):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_chan, out_chan, kernel, stride=stride, padding=pad, dilation=dil, groups=groups),
            nn.BatchNorm1d(out_chan),
            nn.ReLU(inplace=True) if k == 1 else nn.GLU(dim=1),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.conv(x)


class _NoteSep(nn.Module):
    def __init__(self, in_chan, out_chan, kernel=3, stride=1, pad=1, dil=1, dropout=0.0, k=1, **kw):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_chan, k * in_chan, kernel, stride=stride, padding=pad, dilation=dil, groups=in_chan),
            nn.BatchNorm1d(k * in_chan),
            nn.ReLU(inplace=True) if k == 1 else nn.GLU(dim=1),
            nn.Dropout(dropout),
            nn.Conv1d(in_chan, out_chan, 1),
            nn.BatchNorm1d(out_chan),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.conv(x)


class _NoteAttn(nn.Module):
    def __init__(self, in_chan, n_heads=8, kernel=5, dropout=0.0, pad=2, bias=True, **kw):
        super().__init__()
        self.n_heads, self.dropout, self.pad = n_heads, dropout, pad
        self.weight = nn.Parameter(torch.Tensor(n_heads, 1, kernel))
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(in_chan)) if bias else None

    def forward(self, x):
        in_ = x.reshape(-1, self.n_heads, x.size(2))
        weight = F.dropout(F.softmax(self.weight, dim=-1), self.dropout, training=self.training)
        out = F.conv1d(in_, weight, padding=self.pad, groups=self.n_heads).reshape(x.shape)
        return out + self.bias.view(1, -1, 1) if self.bias is not None else out


class _NoteCAC(nn.Module):
    def __init__(
        self,
        in_chan,
        out_chan,
        kernel_conv=3,
        stride_conv=1,
        pad_conv=1,
        dil_conv=1,
        dropout_conv=0.0,
        groups=1,
        k=1,
        n_heads=8,
        kernel_attn=5,
        dropout_attn=0.0,
        pad_attn=2,
        bias=True,
    ):
        super().__init__()
        self.conv = _NoteConv(in_chan, out_chan, kernel_conv, stride_conv, pad_conv, dil_conv, dropout_conv, groups, k)
        self.attn_conv = _NoteAttn(out_chan // k, n_heads, kernel_attn, dropout_attn, pad_attn, bias)

    def forward(self, x):
        return self.attn_conv(self.conv(x))


class _NoteFF(nn.Module):
    def __init__(self, input_size, output_size, d_ff=2048, dropout=0.0, **kw):
        super().__init__()
        self.ff = nn.Sequential(
            nn.Linear(input_size, d_ff),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(d_ff, output_size),
            nn.Dropout(dropout),
            nn.LayerNorm(output_size),
        )

    def forward(self, x):
        return self.ff(x)


_NOTE_BLOCKS = {
    "conv_block": _NoteConv,
    "separable_conv_block": _NoteSep,
    "attention_conv_block": _NoteAttn,
    "conv_attention_conv_block": _NoteCAC,
    "feed_forward": _NoteFF,
}


class NoteModel(nn.Module):
    """The design note's STTModel.forward: permutes around every conv, no masking, no lengths."""

    def __init__(self, cfg, input_size, output_size):
        super().__init__()
        self.cfg = cfg.layers
        width = cfg.in_width
        self.input_proj = nn.Sequential(
            nn.Dropout(0.25), nn.Linear(input_size, width), nn.ReLU(inplace=True), nn.LayerNorm(width)
        )
        self.network = nn.ModuleList(
            nn.ModuleList(nn.ModuleList(_NOTE_BLOCKS[t](**kw) for t, kw in blk) for blk in layer) for layer in self.cfg
        )
        self.output_proj = nn.Linear(cfg.out_width, output_size)

    def forward(self, x):
        x = self.input_proj(x)
        for i, layer in enumerate(self.network):
            out = x
            for j, block in enumerate(layer):
                outs = []
                for k, sub in enumerate(block):
                    if "conv" in self.cfg[i][j][k][0]:
                        outs.append(sub(out.permute(0, 2, 1)).permute(0, 2, 1))
                    else:
                        outs.append(sub(out))
                out = torch.cat(outs, dim=-1)
            x = x + out if out.shape == x.shape else out
        return self.output_proj(x)


def note_train_step(model: NoteModel, opt: torch.optim.Optimizer, feats, targets, target_lens, autocast=None):
    """The design note's training step: no lengths (every output frame counts), CTC, AdamW.

    ``autocast`` is a context manager factory for the bf16 rows (None: fp32). Returns the loss on its
    device (no host sync).
    """
    import contextlib

    with autocast() if autocast else contextlib.nullcontext():
        logits = model(feats)  # [B, T', V]
    out_lens = torch.full((feats.size(0),), logits.size(1), dtype=torch.long, device=feats.device)
    loss = F.ctc_loss(
        logits.float().log_softmax(-1).transpose(0, 1), targets, out_lens, target_lens, zero_infinity=True
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()
