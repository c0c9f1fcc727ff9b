"""What a search trial pays to open its corpus, against the corpus's number of files.

Generates LibriSpeech-layout corpora of short files (train/dev/test, 80/10/10), prepares their fbank caches,
then times, on each:

* ``open_training_data``: what every trial's child called before a worker opened the corpus once (it reads
  every transcript file, stats every audio file and checks every shard);
* ``reopen``: what a trial's child calls when its fork server does not hold the corpus (it reads the caches'
  indexes only);
* ``preloaded``: what it calls when the fork server opened the worker's corpus once (the normal case), timed
  inside children forked from that server.

Each size runs in a fresh process (a process has one fork server). Prints a table and writes
``results/trial_startup.json``.

    python bench/trial_startup.py --files 3000 30000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def make_corpus(out: Path, files: int, seconds: float = 0.4) -> None:
    """``files`` FLAC files of ``seconds`` of noise-shaped tones, 10 per chapter, with their transcripts."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    for i in range(files):
        split = "train" if i % 10 < 8 else ("dev" if i % 10 == 8 else "test")
        spk, chapter, utt = 1000 + i // 100, (i // 10) % 10, i % 10
        folder = out / split / str(spk) / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        wav = 0.1 * np.sin(2 * np.pi * (200 + 10 * (i % 50)) * t) + 0.01 * rng.standard_normal(n)
        uid = f"{spk}-{chapter}-{utt:04d}"
        sf.write(folder / f"{uid}.flac", wav.astype(np.float32), 16000, format="FLAC", subtype="PCM_16")
        with open(folder / f"{spk}-{chapter}.trans.txt", "a") as fh:
            fh.write(f"{uid} {WORDS[i % 10]} {WORDS[(i // 10) % 10]}\n")


def probe(where: dict) -> tuple[float, int]:
    """In a child of the fork server: seconds to get the trial's corpus, and its training utterances."""
    from search.isolation import trial_corpus

    t0 = time.perf_counter()
    data = trial_corpus(where)
    return time.perf_counter() - t0, len(data.train)


def measure(data_dir: Path, repeats: int) -> dict:
    """Run in its own process: the three ways a trial opens the corpus, ``repeats`` times each (median)."""
    from search.isolation import call_in_child, start
    from stt.data.training_data import open_training_data, reopen

    opened = open_training_data(data_dir, progress=False)  # prepares the caches (once; not timed)
    where = opened.where()
    out = {"files": sum(1 for _ in data_dir.rglob("*.flac")), "utterances": sum(len(c) for c in opened.caches.values())}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        open_training_data(data_dir, progress=False)
        times.append(time.perf_counter() - t0)
    out["open_training_data_s"] = statistics.median(times)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reopen(where)
        times.append(time.perf_counter() - t0)
    out["reopen_s"] = statistics.median(times)
    start(where)  # once per worker: the fork server opens the corpus
    runs = [call_in_child(probe, where) for _ in range(repeats)]
    assert all(n == len(opened.train) for _, n in runs)
    out["preloaded_s"] = statistics.median(t for t, _ in runs)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, nargs="+", default=[3000, 30000])
    p.add_argument("--work", default=None, help="where the corpora are made (default: a temporary folder)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # one size, in this process
    p.add_argument("--out", default=str(ROOT / "results" / "trial_startup.json"))
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.repeats)))
        return
    import tempfile

    from stt.data.features import prepare_features

    work = Path(args.work or tempfile.mkdtemp(prefix="stt-startup-"))
    rows = []
    for files in args.files:
        data = work / f"corpus{files}"
        if not (data / "test").exists():
            t0 = time.time()
            make_corpus(data, files)
            prepare_features(data, progress=False)
            print(f"made and prepared {files} files in {time.time() - t0:.0f} s: {data}", file=sys.stderr)
        cmd = [sys.executable, __file__, "--measure", str(data), "--repeats", str(args.repeats)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print(f"{'files':>7} {'open_training_data':>19} {'reopen':>9} {'preloaded':>10}")
    for r in rows:
        print(f"{r['files']:7d} {r['open_training_data_s']:18.3f}s {r['reopen_s']:8.3f}s {r['preloaded_s']:9.4f}s")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        ratio = {k: b[k] / a[k] for k in ("open_training_data_s", "reopen_s", "preloaded_s")}
        print(
            f"{b['files'] / a['files']:.0f}x the files: open_training_data {ratio['open_training_data_s']:.1f}x, "
            f"reopen {ratio['reopen_s']:.1f}x, preloaded {ratio['preloaded_s']:.2f}x"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
