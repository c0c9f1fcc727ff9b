"""Does the search beat hand-tuning at equal compute? The arms at one wall budget, in one run.

    python bench/search_vs_default.py --data data/synth --budget 1500

(a) ``default``: the shipped default config (``stt/configs/small.yaml``) trained alone with its own
    recipe (20 epochs), stopped at the budget if it is still running then.
(a') ``long``: the default config with its recipe but as many epochs as fill the budget (from the pace of (a),
    or ``--long-epochs``): what a researcher with the budget and no search would do.
``seeds``: (a) again with training seeds 1 and 2: the spread of the default's test WER.
(b) ``before``: the search as it was before issue 23: the shipped small space from the default config (a seed,
    trained in full), TPE, ASHA with pause and promote on the dev CTC loss; no stretch.
(c) ``now``: the default strategy: (b), and the budget's last ``--stretch`` share (default 0.4) grows the best
    candidate trained in full by a morphism and trains it on to the end (search/stretch.py).
``evolution`` (not in the default arms): (c) with ``--sampler evolution`` instead of TPE.

Each search gets ``--budget`` seconds of wall time. The arms run one after the other on this machine, in a
scratch database. Prints, per arm: best dev WER and its test WER, which trial that is (the seed, a candidate, or
a grown one), the candidates evaluated and the epochs they reached, and wall time; then one JSON line.
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


def default_arm(data: str, out: Path, budget: float, epochs: int | None = None, seed: int = 0, arm="default") -> dict:
    t = time.time()
    cmd = [sys.executable, "-m", "stt.cli", "train", "--config", "small.yaml", "--data", data, "--out", str(out)]
    cmd += ["--seed", str(seed)] + (["--epochs", str(epochs)] if epochs else [])
    try:
        subprocess.run(cmd, check=True, timeout=budget, stdout=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pass  # best.pt holds the best epoch so far; score it as it stands
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    return {
        "arm": arm,
        "seed": seed,
        "best_dev_wer": res.get("dev_wer"),
        "test_wer": res.get("test_wer"),
        "candidates": 1,
        "fidelity": {res.get("epochs"): 1},
        "wall_seconds": round(time.time() - t),
        "seconds_per_epoch": res["wall_seconds"] / res["epochs"] if res.get("epochs") else None,
    }


def search_arm(
    name: str, space: str, data: str, storage: str, runs: str, budget: float, seed: int, sampler="tpe", **kw
) -> dict:
    t = time.time()
    s = settings_from_space(space, data, 1000, sampler=sampler, seed=seed, runs_dir=runs, **kw)
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
    kind = None
    if best is not None:
        kind = (
            "seed"
            if isinstance(best.get("seed"), str)
            else "grown"
            if isinstance(best.get("growth"), dict)
            else "candidate"
        )
    return {
        "arm": name,
        "best_is": kind,
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
    p.add_argument("--arms", default="default,long,seeds,before,now")
    p.add_argument("--long-epochs", type=int, default=None, help="(a')'s epochs (default: what fills the budget)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="search-vs-default-"))
    storage, runs = f"sqlite:///{work}/bench.db", str(work / "runs")
    rows = []
    for arm in args.arms.split(","):
        if arm == "default":
            rows.append(default_arm(args.data, work / "default", args.budget))
        elif arm == "long":
            pace = next((r["seconds_per_epoch"] for r in rows if r["arm"] == "default"), None)
            epochs = args.long_epochs or (int(args.budget / pace) if pace else None)
            if epochs is None:
                raise SystemExit("--arms long needs the default arm first, or --long-epochs")
            rows.append(default_arm(args.data, work / "long", args.budget * 1.2, epochs, arm="long"))
        elif arm == "seeds":
            for seed in (1, 2):
                rows.append(default_arm(args.data, work / f"seed{seed}", args.budget, seed=seed, arm="seeds"))
        elif arm == "before":
            rows.append(search_arm("before", "small", args.data, storage, runs, args.budget, args.seed, stretch=0))
        elif arm == "now":
            rows.append(search_arm("now", "small", args.data, storage, runs, args.budget, args.seed))
        elif arm == "evolution":
            rows.append(search_arm(arm, "small", args.data, storage, runs, args.budget, args.seed, sampler=arm))
        r = rows[-1]
        fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        print(
            f"{r['arm']:8s} best dev WER {fmt(r['best_dev_wer']):>6s}  test WER {fmt(r['test_wer']):>6s}  "
            f"best is {r.get('best_is') or 'the default'}  candidates {r['candidates']:3d}  "
            f"epochs reached {r['fidelity']}  wall {r['wall_seconds']} s",
            flush=True,
        )
    tests = [r["test_wer"] for r in rows if r["arm"] in ("default", "seeds") and r["test_wer"] is not None]
    if len(tests) > 1:
        print(
            f"the default's test WER over {len(tests)} seeds: {', '.join(f'{100 * v:.1f}%' for v in tests)}; "
            f"spread {100 * (max(tests) - min(tests)):.1f} points"
        )
    print(json.dumps({"budget": args.budget, "arms": rows}))
    print(f"database: {storage}")


if __name__ == "__main__":
    main()
