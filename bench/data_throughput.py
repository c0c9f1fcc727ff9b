"""Data-path throughput: frontend audio-seconds/second and cached-loader batches/second.

    python bench/data_throughput.py --data data/synth-1h [--frontend fbank] [--batch-frames 12000]

Synthesises a small corpus first when --data does not exist. Prints one line
per measurement so later runs can be compared (same machine, same command).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from stt.data.audio import read_audio
from stt.data.batching import make_loader
from stt.data.corpus import find_splits, read_split
from stt.data.features import open_split
from stt.data.frontends import build_frontend


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth-bench")
    p.add_argument("--frontend", default="fbank")
    p.add_argument("--split", default="train")
    p.add_argument("--batch-frames", type=int, default=12000)
    p.add_argument("--max-utts", type=int, default=400, help="utterances for the frontend measurement")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()

    if not Path(args.data).exists():
        from stt.data.synth import SynthSettings, prepare_synth

        prepare_synth(args.data, SynthSettings(hours=0.25))
    utts, _ = read_split(find_splits(args.data)[args.split])
    utts = utts[: args.max_utts]
    fe = build_frontend(args.frontend)
    wavs = [read_audio(u.path) for u in utts]  # decoding is not the frontend's cost
    audio_s = sum(len(w) for w in wavs) / 16000
    t = time.perf_counter()
    for w in wavs:
        fe(w)
    dt = time.perf_counter() - t
    print(
        f"frontend {fe.identity}: {audio_s / dt:,.0f} audio-s/s "
        f"({len(wavs)} utterances, {audio_s:.0f} s, torch threads {torch.get_num_threads()})"
    )

    cache = open_split(args.data, args.split, args.frontend, progress=False)
    loader = make_loader(cache, args.batch_frames, shuffle=True)
    n, t = 0, time.perf_counter()
    for epoch in range(args.epochs):
        loader.batch_sampler.set_epoch(epoch)
        for _ in loader:
            n += 1
    dt = time.perf_counter() - t
    print(
        f"cached loader: {n / dt:,.1f} batches/s, {cache.hours * 3600 * args.epochs / dt:,.0f} audio-s/s "
        f"({len(cache)} utterances, {args.batch_frames} frames/batch, {args.epochs} epochs)"
    )


if __name__ == "__main__":
    main()
