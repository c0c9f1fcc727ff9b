"""TPE vs random search at the same budget, and what pruning saves.

    python bench/search_tpe_vs_random.py --data data/synth --budget 900 [--space spaces/small.yaml]

The target trial count is set out of reach so the budget decides; TPE's random
start is ``--startup-trials`` (a target-derived default would leave TPE random
for the whole budget). Runs three studies one after the other in a scratch SQLite database, each for
``--budget`` seconds: TPE with the median pruner, random with the median
pruner, and TPE without pruning. Prints, for each, the best dev WER, trials
finished, wall time and trial-epochs trained; pruning's saving is the
trial-epochs a pruned trial did not train (``epochs - epochs run``), summed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from search.results.compare import trials_frame
from search.settings import settings_from_space
from search.study import launch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth")
    p.add_argument("--space", default="spaces/small.yaml")
    p.add_argument("--budget", type=float, default=900, help="seconds per study")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-trials", type=int, default=4, help="TPE's random trials before it models the space")
    args = p.parse_args()
    storage = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    runs = tempfile.mkdtemp()
    for name, sampler, pruner in [
        ("tpe", "tpe", "median"),
        ("random", "random", "median"),
        ("tpe-nopruning", "tpe", "none"),
    ]:
        s = settings_from_space(
            args.space,
            args.data,
            1000,
            sampler=sampler,
            pruner=pruner,
            seed=args.seed,
            epochs=args.epochs,
            runs_dir=runs,
            startup_trials=args.startup_trials,
        )
        t = time.time()
        launch(name, s, storage, timeout=args.budget)
        wall = time.time() - t
        df = trials_frame(name, storage)
        max_epochs = df["train_epochs"].max()
        pruned = df[df["state"] == "PRUNED"]
        saved = int((max_epochs - pruned["epochs"].fillna(0)).sum()) if len(pruned) else 0
        print(
            f"{name:14s} best dev WER {100 * df['dev_wer'].min():5.1f}%  trials {len(df):3d} "
            f"(pruned {len(pruned)})  wall {wall:6.0f} s  trial-epochs {int(df['epochs'].fillna(0).sum()):4d}  "
            f"saved by pruning {saved}",
            flush=True,
        )
    print(f"database: {storage}")


if __name__ == "__main__":
    main()
