"""A worker's memory over many trials: one process per trial (the default) against --in-process.

    python bench/worker_memory.py [--trials 40] [--work /tmp/worker-memory]

Runs ``stt-search launch`` on a tiny synthetic corpus with a tiny space (1 epoch per trial), once as
the worker runs by default and once with ``--in-process``, reads the worker's resident memory from
its per-trial log line, and prints the table and the ratio RSS(after trial N) / RSS(after trial 5).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SPACE = """
frontend: fbank
width: [32, 48, 64]
layers: {low: 1, high: 3}
layer: {stride: [1, 2], branches: {low: 1, high: 3}, d_ff: [1, 2]}
branch:
  type: [conv_block, separable_conv_block, attention_conv_block, conv_attention_conv_block]
  kernel: [3, 5, 7]
  dilation: [1, 2]
  glu: [false, true]
  heads: [2, 4]
  dropout: {low: 0.0, high: 0.2}
train: {lr: {low: 0.003, high: 0.01, log: true}, batch_frames: [3000, 6000], epochs: 1}
"""
LINE = re.compile(r"^trial (\d+) \w+.*worker RSS (\d+) MB")


def run(work: Path, data: Path, trials: int, in_process: bool) -> dict[int, int]:
    name = "inproc" if in_process else "isolated"
    cmd = [
        sys.executable,
        "-m",
        "search.cli",
        "launch",
        "--space",
        str(work / "space.yaml"),
        "--data",
        str(data),
        "--study",
        name,
        "--trials",
        str(trials),
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--seed",
        "0",
        "--storage",
        f"sqlite:///{work / 'memory.db'}",
        "--runs-dir",
        str(work / "runs"),
    ]
    if in_process:
        cmd.append("--in-process")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name}: stt-search launch failed:\n{proc.stderr[-3000:]}")
    rss, done = {}, 0
    for line in proc.stderr.splitlines():
        m = LINE.match(line)
        if m:
            done += 1
            rss[done] = int(m.group(2))  # keyed by trials finished, in finishing order
    return rss


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--work", default=None, help="folder for the corpus, runs and database (default: temporary)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "space.yaml").write_text(SPACE)
        data = work / "corpus"
        if not data.exists():
            from stt.data.synth import SynthSettings, prepare_synth

            prepare_synth(
                data, SynthSettings(hours=0.012, vocab=30, seed=3, min_words=2, max_words=5), workers=2, progress=False
            )
        results = {"isolated": run(work, data, args.trials, False), "in-process": run(work, data, args.trials, True)}
    print(f"{'trials':>6s} {'isolated MB':>12s} {'in-process MB':>14s}")
    for n in sorted(set(results["isolated"]) | set(results["in-process"])):
        if n in (1, 2, 5) or n % 5 == 0:
            print(f"{n:6d} {results['isolated'].get(n, 0):12d} {results['in-process'].get(n, 0):14d}")
    for kind, rss in results.items():
        last = max(rss)
        print(f"{kind}: RSS after trial {last} / after trial 5 = {rss[last] / rss[5]:.2f}x")


if __name__ == "__main__":
    main()
