"""CPU layout: N single-threaded trials side by side, or one N-threaded trial? Candidate-epochs per minute.

    python bench/cpu_layout.py --data data/synth [--steps 12] [--rounds 3]

Each layout trains the shipped default config (``small.yaml``) with ``Trainer.train_step`` on the trainer's
own batches (epoch 0's frame-budget buckets, in its shuffled order):

  * ``1xN``: one process with N torch threads (N = the cores), as one study worker trains;
  * ``Nx1``: N processes with one thread each, started together on a barrier, as ``--workers N`` trains.

A layout's rate is the audio-seconds all its processes trained per wall second of the slowest, the first
step of each process (allocator and kernel warm-up) not counted; candidate-epochs per minute is that rate
over one epoch's audio. The layouts alternate round by round, so drift in the machine hits both alike; each
row is the median over rounds. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _train(data: str, threads: int, steps: int, barrier, out) -> None:
    import torch

    torch.set_num_threads(threads)
    from stt.data.batching import collate
    from stt.data.training_data import open_training_data
    from stt.train.run_config import load_run_config
    from stt.train.trainer import Trainer

    corpus = open_training_data(data, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(load_run_config("small.yaml"), corpus, tmp, device="cpu", progress=False)
    order = trainer.sampler.order()[: steps + 1]
    batches = [
        trainer._to_device(collate([trainer.train_set[trainer.keep[i]] for i in b], trainer.buckets))[:4] for b in order
    ]
    audio = sum(trainer.durations[trainer.keep[i]] for b in order[1:] for i in b)
    epoch_audio = sum(trainer.durations[i] for i in trainer.keep)
    trainer.train_step(*batches[0])  # warm-up, not counted
    barrier.wait()
    t0 = time.perf_counter()
    for b in batches[1:]:
        trainer.train_step(*b)
    out.put((audio, time.perf_counter() - t0, epoch_audio))


def layout(data: str, procs: int, threads: int, steps: int) -> tuple[float, float]:
    """(audio-seconds per wall second over all processes, one epoch's audio-seconds)."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_train, args=(data, threads, steps, barrier, out)) for _ in range(procs)]
    for p in ps:
        p.start()
    res = [out.get() for _ in ps]
    for p in ps:
        p.join()
    return sum(a for a, _, _ in res) / max(s for _, s, _ in res), res[0][2]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth")
    p.add_argument("--steps", type=int, default=12, help="timed steps per process per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    n = args.cores
    layouts = {f"1x{n}": (1, n), f"{n}x1": (n, 1)}
    rates: dict[str, list[float]] = {k: [] for k in layouts}
    epoch_audio = 0.0
    for r in range(args.rounds):
        for name, (procs, threads) in layouts.items():
            rate, epoch_audio = layout(args.data, procs, threads, args.steps)
            rates[name].append(rate)
            print(f"round {r + 1} {name}: {rate:.1f} audio-s/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name, rate in med.items():
        print(f"{name:5s} {rate:7.1f} audio-s/s  {60 * rate / epoch_audio:5.2f} candidate-epochs/min")
    a, b = med[f"1x{n}"], med[f"{n}x1"]
    print(
        f"{n}x1 / 1x{n}: {b / a:.2f}x the candidate-epochs per minute; one candidate's epoch takes "
        f"{epoch_audio / a:.0f} s at 1x{n} and {n * epoch_audio / b:.0f} s at {n}x1"
    )


if __name__ == "__main__":
    main()
