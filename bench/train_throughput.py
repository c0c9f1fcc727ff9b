"""Training throughput (audio-seconds/second) on the current device.

    python bench/train_throughput.py [--data data/synth-bench] [--steps 6] [--batch-frames 8000]

Measures, in one run and on the same batches:
  * ``ours``: this library's training step (cached float16 features, masked
    blocks, bf16 autocast on CUDA) for the default small config and for the
    seed's 512-wide base config;
  * ``design-note``: a reference step written as in the design note — its
    blocks (unmasked, ``[B, T, C]`` permutes around every conv), fp32, and the
    frontend recomputed from the audio at every step — for the same configs.
It prints audio-s/s for each and the ratio ours / design-note.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from stt.audio import read_audio
from stt.batching import FeatureDataset, FrameBudgetBatchSampler, collate
from stt.corpus import find_splits, read_split
from stt.features import open_split
from stt.frontends import Fbank
from stt.layer_config import load_layer_config
from stt.model import STTModel
from stt.run_config import load_run_config


# --- the design note's blocks, as written there (bugs that stop it running fixed, nothing else) ---
class _NoteConv(nn.Module):
    def __init__(self, in_chan, out_chan, kernel=3, stride=1, pad=1, dil=1, dropout=0.0, groups=1, k=1, **kw):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(in_chan, out_chan, kernel, stride=stride, padding=pad, dilation=dil, groups=groups),
                                  nn.BatchNorm1d(out_chan), nn.ReLU(inplace=True) if k == 1 else nn.GLU(dim=1), nn.Dropout(dropout))  # fmt: skip

    def forward(self, x):
        return self.conv(x)


class _NoteSep(nn.Module):
    def __init__(self, in_chan, out_chan, kernel=3, stride=1, pad=1, dil=1, dropout=0.0, k=1, **kw):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(in_chan, k * in_chan, kernel, stride=stride, padding=pad, dilation=dil, groups=in_chan),
                                  nn.BatchNorm1d(k * in_chan), nn.ReLU(inplace=True) if k == 1 else nn.GLU(dim=1), nn.Dropout(dropout),
                                  nn.Conv1d(in_chan, out_chan, 1), nn.BatchNorm1d(out_chan), nn.ReLU(inplace=True), nn.Dropout(dropout))  # fmt: skip

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
    def __init__(self, in_chan, out_chan, kernel_conv=3, stride_conv=1, pad_conv=1, dil_conv=1, dropout_conv=0.0, groups=1,
                 k=1, n_heads=8, kernel_attn=5, dropout_attn=0.0, pad_attn=2, bias=True):  # fmt: skip
        super().__init__()
        self.conv = _NoteConv(in_chan, out_chan, kernel_conv, stride_conv, pad_conv, dil_conv, dropout_conv, groups, k)
        self.attn_conv = _NoteAttn(out_chan // k, n_heads, kernel_attn, dropout_attn, pad_attn, bias)

    def forward(self, x):
        return self.attn_conv(self.conv(x))


class _NoteFF(nn.Module):
    def __init__(self, input_size, output_size, d_ff=2048, dropout=0.0, **kw):
        super().__init__()
        self.ff = nn.Sequential(nn.Linear(input_size, d_ff), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                nn.Linear(d_ff, output_size), nn.Dropout(dropout), nn.LayerNorm(output_size))  # fmt: skip

    def forward(self, x):
        return self.ff(x)


_NOTE_BLOCKS = {"conv_block": _NoteConv, "separable_conv_block": _NoteSep, "attention_conv_block": _NoteAttn,
                "conv_attention_conv_block": _NoteCAC, "feed_forward": _NoteFF}  # fmt: skip


class NoteModel(nn.Module):
    """The design note's STTModel.forward: permutes around every conv, no masking, no lengths."""

    def __init__(self, cfg, input_size, output_size):
        super().__init__()
        self.cfg = cfg.layers
        width = cfg.in_width
        self.input_proj = nn.Sequential(nn.Dropout(0.25), nn.Linear(input_size, width), nn.ReLU(inplace=True), nn.LayerNorm(width))
        self.network = nn.ModuleList(nn.ModuleList(nn.ModuleList(_NOTE_BLOCKS[t](**kw) for t, kw in blk) for blk in layer)
                                     for layer in self.cfg)  # fmt: skip
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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name, cfg_src, cache, paths, batches, steps, device):
    layers = load_layer_config(cfg_src)
    ds = FeatureDataset(cache)
    durs = [u["duration"] for u in cache.utterances]
    results = {}
    for kind in ("ours", "design-note"):
        torch.manual_seed(0)
        if kind == "ours":
            model = STTModel(layers, input_size=cache.feature_size, output_size=29).to(device)
        else:
            model = NoteModel(layers, cache.feature_size, 29).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        fbank = Fbank()
        audio, t = 0.0, 0.0
        for s, batch in enumerate(batches[: steps + 1]):
            _sync(device)
            t0 = time.perf_counter()
            feats, flens, tg, tlens, idx = collate([ds[i] for i in batch])
            if kind == "ours":
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits, olens = model(feats.to(device), flens.to(device))
            else:  # features recomputed from the audio at every step, fp32, no lengths
                feats = torch.nn.utils.rnn.pad_sequence([fbank(read_audio(paths[cache.utterances[i]["id"]])) for i in batch], batch_first=True)
                logits = model(feats.to(device))
                olens = torch.full((len(batch),), logits.size(1), dtype=torch.long)
            loss = F.ctc_loss(logits.float().log_softmax(-1).transpose(0, 1), tg.to(device), olens.to(device), tlens.to(device), zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            _sync(device)
            if s > 0:  # the first step warms up allocators and kernels
                t += time.perf_counter() - t0
                audio += sum(durs[i] for i in batch)
        results[kind] = audio / t
    print(f"{name:14s} ours {results['ours']:9.1f} audio-s/s   design-note {results['design-note']:9.1f} audio-s/s   "
          f"ratio {results['ours'] / results['design-note']:.2f}x")  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth-bench")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-frames", type=int, default=8000)
    p.add_argument("--seed-steps", type=int, default=3, help="steps for the 512-wide seed config (slow on CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    if not Path(args.data).exists():
        from stt.synth import SynthSettings, prepare_synth

        prepare_synth(args.data, SynthSettings(hours=0.25))
    device = torch.device(args.device)
    cache = open_split(args.data, "train", "fbank", progress=False)
    paths = {u.id: u.path for u in read_split(find_splits(args.data)["train"])[0]}
    batches = FrameBudgetBatchSampler(cache.frames, args.batch_frames, seed=0).order()
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.batch_frames} frames/batch")
    bench("small.yaml", load_run_config("small.yaml").layers, cache, paths, batches, args.steps, device)
    bench("seed_base.yaml", "seed_base.yaml", cache, paths, batches, args.seed_steps, device)


if __name__ == "__main__":
    main()
