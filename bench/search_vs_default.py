"""Does the search beat hand-tuning at equal compute? Three arms at one wall budget, in one run.

    python bench/search_vs_default.py --data data/synth --budget 1500

(a) ``default``: the shipped default config (``stt/configs/small.yaml``) trained alone with its own
    recipe (20 epochs), stopped at the budget if it is still running then.
(b) ``before``: the search as it was before issue 12: the old small space (64-128 wide, no seeds,
    10 epochs per candidate), TPE and the median pruner on dev WER.
(c) ``now``: the default strategy: the shipped small space (which starts from the default config
    and trains it in full: ASHA never pauses a seed), TPE and asynchronous successive halving with
    pause and promote (search/pruners/asha.py) in epochs, on the dev CTC loss.

Each search gets ``--budget`` seconds of wall time (no trial starts after it; one still running stops
at its next epoch end). The arms run one after the other on this machine, in a scratch database.
Prints, per arm: best dev WER and its test WER, the candidates evaluated (distinct configs) and the
epochs they reached (the fidelity: 0.33 is the probe after a third of epoch 1), and wall time; then
one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from search.results.compare import trials_frame
from search.settings import settings_from_space
from search.study import launch

# spaces/small.yaml as it was before issue 12 (commit af9dca9), the "today" of the issue
BEFORE_SPACE = """
frontend: fbank
width: [64, 96, 128]
layers: {low: 2, high: 4}
max_total_stride: 4
layer: {stride: [1, 2], branches: {low: 1, high: 3}, d_ff: [1, 2]}
branch:
  type: [conv_block, separable_conv_block, attention_conv_block, conv_attention_conv_block]
  kernel: [3, 5, 7]
  dilation: [1, 2, 3]
  glu: [false, true]
  heads: [2, 4, 8]
  dropout: {low: 0.0, high: 0.2}
train: {lr: {low: 0.003, high: 0.01, log: true}, batch_frames: [8000, 12000], epochs: 10, warmup: 0.15}
"""


def default_arm(data: str, out: Path, budget: float) -> dict:
    t = time.time()
    cmd = [sys.executable, "-m", "stt.cli", "train", "--config", "small.yaml", "--data", data, "--out", str(out)]
    try:
        subprocess.run(cmd, check=True, timeout=budget, stdout=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pass  # best.pt holds the best epoch so far; score it as it stands
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    return {
        "arm": "default",
        "best_dev_wer": res.get("dev_wer"),
        "test_wer": res.get("test_wer"),
        "candidates": 1,
        "fidelity": {res.get("epochs"): 1},
        "wall_seconds": round(time.time() - t),
    }


def search_arm(name: str, space: str, data: str, storage: str, runs: str, budget: float, seed: int, **kw) -> dict:
    t = time.time()
    s = settings_from_space(space, data, 1000, sampler="tpe", seed=seed, runs_dir=runs, **kw)
    launch(name, s, storage, timeout=budget)
    wall = time.time() - t
    df = trials_frame(name, storage)
    scored = df.dropna(subset=["config_hash"])
    scored = scored[scored["dev_wer"].notna()]  # trained at least one epoch
    reached = pd.to_numeric(scored["epochs"]).groupby(scored["config_hash"]).max()  # a promoted one spans trials
    done = df[df["state"] == "COMPLETE"].sort_values("dev_wer")
    if done.empty:  # the budget ended before any candidate reached full fidelity: the best so far, as export does
        done = df[df["status"] == "paused"].sort_values("dev_wer")
    best = done.iloc[0] if len(done) else None
    return {
        "arm": name,
        "best_dev_wer": None if best is None else float(best["dev_wer"]),
        "test_wer": None if best is None or pd.isna(best["test_wer"]) else float(best["test_wer"]),
        "best_trial": None if best is None else int(best["trial"]),
        "best_epochs": None if best is None else float(best["epochs"]),
        "candidates": len(reached),
        "fidelity": dict(sorted(collections.Counter(round(float(e), 2) for e in reached).items())),
        "wall_seconds": round(wall),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth")
    p.add_argument("--budget", type=float, default=1500, help="wall seconds per arm (default 25 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default="default,before,now")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="search-vs-default-"))
    storage, runs = f"sqlite:///{work}/bench.db", str(work / "runs")
    (work / "before.yaml").write_text(BEFORE_SPACE)
    rows = []
    for arm in args.arms.split(","):
        if arm == "default":
            rows.append(default_arm(args.data, work / "default", args.budget))
        elif arm == "before":
            rows.append(
                search_arm(
                    "before",
                    str(work / "before.yaml"),
                    args.data,
                    storage,
                    runs,
                    args.budget,
                    args.seed,
                    pruner="median",
                    prune_on="wer",
                )
            )
        elif arm == "now":
            rows.append(search_arm("now", "small", args.data, storage, runs, args.budget, args.seed))
        r = rows[-1]
        fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        print(
            f"{r['arm']:8s} best dev WER {fmt(r['best_dev_wer']):>6s}  test WER {fmt(r['test_wer']):>6s}  "
            f"candidates {r['candidates']:3d}  epochs reached {r['fidelity']}  wall {r['wall_seconds']} s",
            flush=True,
        )
    print(json.dumps({"budget": args.budget, "arms": rows}))
    print(f"database: {storage}")


if __name__ == "__main__":
    main()
