"""Many workers on one study, simulated: N `stt-search worker --dry-run` processes against PostgreSQL,
once directly and once through the gRPC storage proxy.

    python bench/storage_scale.py [--workers 64] [--trials-per-worker 10] [--sleep 0.2]

A dry-run worker samples and builds each candidate (on the meta device) and waits instead of training,
so only the storage is under load. It starts its own PostgreSQL server on loopback (Debian's package),
and reports, per mode: trials/s between the first trial's start and the last one's end, the most
database connections seen open at once, and duplicates (a config trained twice) and losses (target
not met, trials left running) - both must be 0.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.search.conftest import start_postgres, stop_postgres  # noqa: E402


def run_mode(name: str, url: str, db_url: str, server, data: Path, runs: Path, args) -> dict:
    study = f"scale-{name}"
    target = args.workers * args.trials_per_worker
    create_dry_run_study(study, db_url, data, runs, target)
    peak, stop = [0], threading.Event()

    def watch():  # open connections to the study database, sampled while the workers run
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], server.connections())
            except subprocess.CalledProcessError:
                pass
            stop.wait(0.5)

    threading.Thread(target=watch, daemon=True).start()
    t0 = time.time()
    procs = dry_run_workers(study, url, args.sleep, args.workers)
    errors = [p.communicate()[1] for p in procs]
    wall = time.time() - t0
    stop.set()
    failed = [e[-300:] for p, e in zip(procs, errors) if p.returncode != 0]
    return {
        "mode": name,
        "workers": args.workers,
        "wall_s": wall,
        "peak_connections": peak[0],
        "failed_workers": len(failed),
        "first_failure": failed[0] if failed else "",
        "locked_errors": sum(e.count("database is locked") for e in errors),
        **tally(study, db_url, target),
    }


def create_dry_run_study(study: str, url: str, data: Path, runs: Path, target: int) -> None:
    """A study of the small space for dry-run workers: random sampling, no pruning, ``target`` trials."""
    from search.settings import settings_from_space
    from search.study import create_study

    space = str(ROOT / "spaces" / "small.yaml")
    settings = settings_from_space(
        space, str(data), target, sampler="random", pruner="none", seed=0, runs_dir=str(runs)
    )
    create_study(study, settings, url)


def dry_run_workers(study: str, url: str, sleep: float, n: int) -> list[subprocess.Popen]:
    """``n`` `stt-search worker --dry-run` processes on one study (they sample and build, train nothing)."""
    cmd = [sys.executable, "-m", "search.cli", "worker", "--study", study, "--storage", url, "--device", "cpu"]
    cmd += ["--dry-run", str(sleep)]
    return [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(n)]


def tally(study: str, url: str, target: int) -> dict:
    """What a dry-run study left: completions, trials/s from the first start to the last end, duplicate
    configs, and losses (target not met, trials left running)."""
    import optuna

    from search.storage import open_storage

    trials = optuna.load_study(study_name=study, storage=open_storage(url)).trials
    counted = [t for t in trials if t.state.name == "COMPLETE"]
    hashes = collections.Counter(t.user_attrs.get("config_hash") for t in counted)
    starts = [t.datetime_start for t in counted if t.datetime_start]
    ends = [t.datetime_complete for t in counted if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
    return {
        "target": target,
        "complete": len(counted),
        "trials_per_s": len(counted) / span,
        "duplicates": sum(n - 1 for n in hashes.values()),
        "lost": target - len(counted) + sum(t.state.name == "RUNNING" for t in trials),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--trials-per-worker", type=int, default=10)
    p.add_argument("--sleep", type=float, default=0.2, help="seconds each dry-run trial waits")
    p.add_argument("--port", type=int, default=13917, help="gRPC proxy port")
    p.add_argument("--modes", default="direct,grpc-proxy", help="which of direct, grpc-proxy to run")
    args = p.parse_args()
    server = start_postgres()
    if server is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    proxy = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "corpus"
            from stt.data.synth import SynthSettings, prepare_synth

            prepare_synth(
                data, SynthSettings(hours=0.012, vocab=30, seed=3, min_words=2, max_words=5), workers=2, progress=False
            )
            rows = []
            if "direct" in args.modes:
                rows.append(run_mode("direct", server.url, server.url, server, data, Path(tmp) / "runs", args))
            if "grpc-proxy" not in args.modes:
                return _print(rows)
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "search.cli",
                    "storage-proxy",
                    "--storage",
                    server.url,
                    "--port",
                    str(args.port),
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
            for line in proxy.stderr:
                if "storage proxy for" in line:
                    break
            rows.append(
                run_mode(
                    "grpc-proxy", f"grpc://localhost:{args.port}", server.url, server, data, Path(tmp) / "runs", args
                )
            )
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        stop_postgres(server)
    _print(rows)


def _print(rows: list[dict]) -> None:
    print(
        f"{'mode':11s} {'workers':>7s} {'complete':>9s} {'trials/s':>9s} {'peak conns':>10s} {'dups':>5s} {'lost':>5s} "
        f"{'failed workers':>14s}"
    )
    for r in rows:
        print(
            f"{r['mode']:11s} {r['workers']:7d} {r['complete']:5d}/{r['target']:<4d}{r['trials_per_s']:9.1f} "
            f"{r['peak_connections']:10d} {r['duplicates']:5d} {r['lost']:5d} {r['failed_workers']:14d}"
        )
        if r["first_failure"]:
            print(f"  first failure ({r['mode']}): {r['first_failure']}")


if __name__ == "__main__":
    main()
