"""Several workers on one host: SQLite in WAL mode vs Optuna's journal file, which locks up less?

    python bench/storage_local.py [--workers 8] [--trials-per-worker 10] [--sleep 0.05]

Each mode runs N `stt-search worker --dry-run` processes (sample, build on the meta device, wait, no
training) on one study and reports trials/s, "database is locked" errors, failed workers, duplicates
(a config sampled twice) and losses (target not met, trials left running). The wait is short on purpose:
the storage, not the trial, is the bottleneck.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.storage_scale import create_dry_run_study, dry_run_workers, tally  # noqa: E402 (the same study)


def run_mode(name: str, url: str, data: Path, runs: Path, args) -> dict:
    study = f"local-{name}"
    target = args.workers * args.trials_per_worker
    create_dry_run_study(study, url, data, runs, target)
    t0 = time.time()
    procs = dry_run_workers(study, url, args.sleep, args.workers)
    errors = [p.communicate()[1] for p in procs]
    wall = time.time() - t0
    return {
        "mode": name,
        "wall_s": wall,
        "locked": sum(e.count("database is locked") for e in errors),
        "failed_workers": sum(p.returncode != 0 for p in procs),
        **tally(study, url, target),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--trials-per-worker", type=int, default=10)
    p.add_argument("--sleep", type=float, default=0.05, help="seconds each dry-run trial waits")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "corpus"
        from stt.data.synth import SynthSettings, prepare_synth

        prepare_synth(
            data, SynthSettings(hours=0.012, vocab=30, seed=3, min_words=2, max_words=5), workers=2, progress=False
        )
        rows = [
            run_mode("sqlite-wal", f"sqlite:///{tmp}/studies.db", data, Path(tmp) / "runs", args),
            run_mode("journal", f"journal:///{tmp}/studies.log", data, Path(tmp) / "runs", args),
        ]
    print(
        f"{'storage':11s} {'complete':>9s} {'trials/s':>9s} {'wall s':>7s} "
        f"{'locked':>7s} {'failed':>7s} {'dups':>5s} {'lost':>5s}"
    )
    for r in rows:
        print(
            f"{r['mode']:11s} {r['complete']:5d}/{r['target']:<4d}{r['trials_per_s']:9.2f} {r['wall_s']:7.1f} "
            f"{r['locked']:7d} {r['failed_workers']:7d} {r['duplicates']:5d} {r['lost']:5d}"
        )


if __name__ == "__main__":
    main()
