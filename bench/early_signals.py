"""Which early dev signal predicts a candidate's final dev WER: the rank correlation table.

    python bench/early_signals.py --data data/synth --trials 13 --epochs 8

Trains ``--trials`` candidates of ``--space`` (random sampler, no pruning, the space's seeds first)
for ``--epochs`` epochs each, in a study of its own (results/early_signals.db; run it again to
continue a stopped run). Then, for each signal (dev CTC loss per letter, dev CER, dev WER) at epochs
1, 2, 3 and 5, it prints the Spearman rank correlation with the final epoch's dev WER over the
candidates that trained every epoch. A pruner ranks by the signal with the highest correlation at
its rungs (``--prune-on``); WER itself sits near 100 % while a CTC model still emits mostly blanks.
"""

from __future__ import annotations

import argparse
import json

import optuna
import pandas as pd

from search.settings import settings_from_space
from search.storage import existing_studies
from search.study import create_study, run_study

SIGNALS = {"dev_loss": "dev CTC loss", "dev_cer": "dev CER", "dev_wer": "dev WER"}


def rank_table(histories: list[dict], at: tuple[int, ...]) -> pd.DataFrame:
    """Spearman correlation of each signal at each epoch in ``at`` with the final dev WER (rows: signals)."""
    final = pd.Series([h["dev_wer"][-1] for h in histories])
    rows = {}
    for key, label in SIGNALS.items():
        rows[label] = {
            f"epoch {e}": pd.Series([h[key][e - 1] for h in histories]).corr(final, method="spearman") for e in at
        }
    return pd.DataFrame(rows).T


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth")
    p.add_argument("--space", default="small")
    p.add_argument("--trials", type=int, default=13)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--study", default="early-signals")
    p.add_argument("--storage", default="sqlite:///results/early_signals.db")
    p.add_argument("--runs-dir", default="results/runs")
    args = p.parse_args()
    if "uid" not in existing_studies(args.storage).get(args.study, {}):
        s = settings_from_space(
            args.space,
            args.data,
            args.trials,
            sampler="random",
            pruner="none",
            seed=args.seed,
            epochs=args.epochs,
            runs_dir=args.runs_dir,
        )
        create_study(args.study, s, args.storage)
    study = run_study(args.study, args.storage, runs_dir=args.runs_dir)
    done = [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and len(t.user_attrs.get("history", {}).get("dev_wer", [])) == args.epochs
    ]
    at = tuple(e for e in (1, 2, 3, 5) if e < args.epochs)
    table = rank_table([t.user_attrs["history"] for t in done], at)
    print(f"\nSpearman rank correlation with the final (epoch {args.epochs}) dev WER, {len(done)} candidates:\n")
    print(table.to_string(float_format=lambda v: f"{v:+.2f}"))
    print("\nper candidate (trial, params, final dev WER, dev CER by epoch):")
    for t in sorted(done, key=lambda t: t.user_attrs["history"]["dev_wer"][-1]):
        h = t.user_attrs["history"]
        print(
            f"  {t.number:3d} {t.user_attrs.get('params', 0) / 1e6:5.2f} M  WER {100 * h['dev_wer'][-1]:5.1f}%  "
            f"CER {' '.join(f'{100 * c:4.1f}' for c in h['dev_cer'])}"
        )
    print(json.dumps({"candidates": len(done), "epochs": args.epochs, "spearman": table.round(3).to_dict()}))
    print(f"database: {args.storage}")


if __name__ == "__main__":
    main()
