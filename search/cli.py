"""The ``stt-search`` command line: launch, resume, export, compare, demo."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

log = logging.getLogger("search")


def _launch(args) -> int:
    from search.study import create_study, launch, settings_from_space

    settings = settings_from_space(
        args.space,
        args.data,
        args.trials,
        sampler=args.sampler,
        pruner=args.pruner,
        prune_on=args.prune_on,
        probe=args.probe,
        seeds_in_full=args.seeds_in_full,
        seed=args.seed,
        objectives=tuple(args.objectives.split(",")),
        max_params=args.max_params,
        max_gflops=args.max_gflops,
        epochs=args.epochs,
        trial_seconds=args.trial_seconds,
        runs_dir=args.runs_dir,
        startup_trials=args.startup_trials,
        heartbeat=args.heartbeat,
        rescore_top=args.rescore_top,
        lm=args.lm,
        lexicon=args.lexicon,
    )
    if args.workers > 1:
        create_study(args.study, settings, args.storage, enqueue=tuple(args.enqueue))
        return _run_workers(args)
    study = launch(
        args.study,
        settings,
        args.storage,
        timeout=args.timeout,
        device=args.device,
        isolate=not args.in_process,
        enqueue=tuple(args.enqueue),
    )
    return _after_run(study, args)


def _join(args, **extra):
    """Work on an existing study from this process (resume and worker alike), with this host's mounts."""
    from search.study import run_study

    return run_study(
        args.study,
        args.storage,
        timeout=args.timeout,
        device=args.device,
        isolate=not args.in_process,
        data_dir=args.data,
        runs_dir=args.runs_dir,
        **extra,
    )


def _resume(args) -> int:
    if args.workers > 1:
        return _run_workers(args)
    return _after_run(_join(args), args)


def _worker(args) -> int:
    """One worker: join the study and train its trials until the target is met (no leaderboard)."""
    from search.study import DEFAULT_STORAGE, count_finished, read_settings, redact

    if args.workers > 1:
        return _run_workers(args)
    study = _join(args, dry_run=args.dry_run)
    print(
        f"worker done: study '{study.study_name}' has {count_finished(study)}/{read_settings(study).trials} trials "
        f"finished; storage {redact(args.storage or DEFAULT_STORAGE)}"
    )
    return 0


def worker_devices(workers: int, device: str | None, per_device: int) -> list[str | None]:
    """One device per local worker: round robin over the visible GPUs, ``per_device`` workers each."""
    import torch

    if device or not torch.cuda.is_available():
        return [device] * workers
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [gpus[(i // per_device) % len(gpus)] for i in range(workers)]


def _run_workers(args) -> int:
    """``--workers N``: N local `stt-search worker` processes on one study; waits for all of them."""
    import subprocess

    from search.study import DEFAULT_STORAGE, open_storage

    storage = args.storage or DEFAULT_STORAGE
    # resume's --data/--runs-dir are this host's mounts, passed on; launch's are in the study already
    data, runs = (args.data, args.runs_dir) if args.command in ("resume", "worker") else (None, None)
    procs = []
    for i, dev in enumerate(worker_devices(args.workers, args.device, args.trials_per_device)):
        cmd = [sys.executable, "-m", "search.cli", "worker", "--study", args.study, "--storage", storage]
        for flag, value in (("--device", dev), ("--timeout", args.timeout), ("--data", data), ("--runs-dir", runs)):
            if value is not None:
                cmd += [flag, str(value)]
        if args.in_process:
            cmd.append("--in-process")
        env = dict(os.environ)
        if not (dev or "").startswith("cuda") and "OMP_NUM_THREADS" not in env:
            # CPU workers share the cores: each takes its share (torch would give every one all of them,
            # and oversubscribed threads spin); measured on 2 cores, two 1-thread workers train 1.24x the
            # audio per second of one 2-thread worker
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.workers))
        procs.append(subprocess.Popen(cmd, env=env))
        log.info("worker %d: pid %d on %s", i, procs[-1].pid, dev or "the default device")
    codes = [p.wait() for p in procs]
    import optuna

    from search.study import count_finished, read_settings

    study = optuna.load_study(study_name=args.study, storage=open_storage(storage))
    rc = _after_run(study, args)
    failed = [c for c in codes if c != 0]
    if failed:
        # a lost worker is said; it is an error only when the others could not finish the study without it
        done = count_finished(study) >= read_settings(study).trials
        print(
            f"stt-search {args.command}: {len(failed)} of {len(codes)} workers exited with an error "
            f"(status {', '.join(map(str, failed))}){'; the others finished the study' if done else ''}",
            file=sys.stderr,
        )
        return rc if done else 1
    return rc


def _after_run(study, args) -> int:
    from search.compare import leaderboard, trials_frame
    from search.study import DEFAULT_STORAGE, count_finished, read_settings, redact

    df = trials_frame(study.study_name, args.storage)
    print(leaderboard(df))
    target = read_settings(study).trials
    promoted = int(df["continues"].notna().sum()) if "continues" in df else 0
    more = f" (and {promoted} trials that continued promoted candidates)" if promoted else ""
    print(
        f"study '{study.study_name}': {count_finished(study)}/{target} trials finished{more}; "
        f"storage {redact(args.storage or DEFAULT_STORAGE)}"
    )
    return 0


def _export(args) -> int:
    from search.export import export

    out, t = export(args.study, args.output, args.storage, args.trial, args.weights, args.runs_dir)
    print(f"trial {t.number} (dev WER {100 * t.user_attrs.get('dev_wer', float('nan')):.1f}%) -> {out}")
    return 0


def _compare(args) -> int:
    import pandas as pd

    from search.compare import leaderboard, trials_frame, write_report

    df = pd.concat([trials_frame(n, args.storage) for n in args.studies], ignore_index=True)
    print(leaderboard(df, args.top))
    out = Path(args.out or Path("results") / "compare" / re.sub(r"[^\w.-]+", "_", "-".join(args.studies)).lstrip("."))
    html = write_report(df, out, args.studies, args.storage)
    print(f"report: {html}\ncsv:    {out / 'trials.csv'}")
    return 0


def _demo(args) -> int:
    """The main job: corpus (synthesised if absent) -> short study -> leaderboard -> exported best config."""
    from search.export import export
    from search.study import DEFAULT_STORAGE, existing_studies, launch, redact, run_study, settings_from_space
    from stt.synth import SynthSettings, prepare_synth

    t0 = time.time()
    data = Path(args.data)
    if not (data / "synth.json").exists():
        print(f"synthesising the built-in corpus ({args.hours} h) into {data} ...", flush=True)
        prepare_synth(data, SynthSettings(hours=args.hours))
    storage = args.storage
    if "uid" in existing_studies(storage).get(args.study, {}):  # a complete study: resume it
        print(f"study '{args.study}' exists: resuming it", flush=True)
        study = run_study(args.study, storage, timeout=args.budget)
    else:
        settings = settings_from_space(
            args.space,
            str(data),
            args.trials,
            sampler="tpe",
            pruner="asha",
            seed=args.seed,
            runs_dir=args.runs_dir,
            epochs=args.epochs,
            rescore_top=args.rescore_top,
        )
        study = launch(args.study, settings, storage, timeout=args.budget)
    _after_run(study, args)
    out = Path(args.export)
    path, t = export(args.study, out, storage)
    print(f"best config (trial {t.number}, dev WER {100 * t.user_attrs['dev_wer']:.1f}%): {path}")
    print(f"train it:   stt train --config {path} --data {data}")
    print(f"database:   {redact(storage or DEFAULT_STORAGE)}   [{(time.time() - t0) / 60:.1f} min]")
    return 0


def _storage_proxy(args) -> int:
    from search.storage import serve_proxy

    serve_proxy(args.storage, args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from search.study import DEFAULT_STORAGE, PRUNERS, SIGNALS
    from stt.cli_args import OneLineParser, nonnegative_int, positive_float, positive_int

    p = OneLineParser(prog="stt-search", description="Architecture search for CTC speech recognisers (Optuna).")
    sub = p.add_subparsers(dest="command", required=True)

    def storage(sp):
        sp.add_argument(
            "--storage",
            default=None,
            help=f"Optuna storage URL (default {DEFAULT_STORAGE}; postgresql://... for many hosts)",
        )

    def device(sp):
        sp.add_argument(
            "--device", default=None, help="where trials train: cpu, cuda, cuda:1 ... (default: CUDA if available)"
        )
        sp.add_argument(
            "--in-process",
            action="store_true",
            help="train trials in this process instead of one child process each (debugging; memory grows)",
        )
        sp.add_argument("--workers", type=positive_int, default=1, help="local worker processes (default 1: this one)")
        sp.add_argument(
            "--trials-per-device",
            type=positive_int,
            default=1,
            help="with --workers and several GPUs: workers per GPU (default 1)",
        )

    def mounts(sp):
        sp.add_argument(
            "--data", default=None, help="where this host mounts the study's data folder (default: the study's)"
        )
        sp.add_argument(
            "--runs-dir", default=None, help="where this host mounts the study's runs root (default: the study's)"
        )

    la = sub.add_parser("launch", help="create a study and run it")
    la.add_argument("--space", required=True, help="a shipped space by name (small, seed) or a search space YAML")
    la.add_argument("--data", required=True, help="data folder (features are prepared if missing)")
    la.add_argument("--study", required=True, help="study name")
    la.add_argument("--trials", type=positive_int, default=20, help="target number of finished trials")
    la.add_argument(
        "--timeout",
        type=positive_float,
        default=None,
        help="wall seconds for this run: no trial starts after it, and a running one stops at its next "
        "epoch end (resume continues it)",
    )
    la.add_argument("--sampler", default="tpe", choices=["tpe", "random", "nsga2"])
    la.add_argument(
        "--pruner",
        default="asha",
        choices=list(PRUNERS),
        help="asha (default): successive halving with pause and promote, rungs at a probe after 1/3 "
        "of epoch 1, then 1, 3, 9... epochs; median: the median of earlier trials at the same epoch",
    )
    la.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="asha: no rung after 1/3 of epoch 1 (the first rung is then epoch 1; early in a long LR "
        "warm-up the probe ranks candidates by their peak LR more than by their architecture)",
    )
    la.add_argument(
        "--pause-seeds",
        dest="seeds_in_full",
        action="store_false",
        help="asha: seed configs (the space's seeds, --enqueue) pause at rungs like any candidate (by default "
        "a seed trains to full fidelity, so the study's best is at least the seed's own result)",
    )
    la.add_argument(
        "--prune-on",
        default="loss",
        choices=list(SIGNALS),
        help="the dev signal pruning compares each epoch (default loss, the CTC loss per letter: it ranks "
        "candidates best from the first epoch, when WER is still ~100%%; see bench/early_signals.py)",
    )
    la.add_argument(
        "--enqueue",
        action="append",
        default=[],
        metavar="CONFIG",
        help="a run config (e.g. an exported one) to train first, after the space's seeds; repeatable",
    )
    la.add_argument(
        "--rescore-top",
        type=nonnegative_int,
        default=0,
        metavar="K",
        help="beam-decode the K best finished trials with a lexicon and LM at the end (leaderboard "
        "columns dev/test_wer_beam); candidates are still ranked by greedy dev WER",
    )
    la.add_argument(
        "--lm",
        default=None,
        help="with --rescore-top: ARPA or KenLM file (default: a unigram LM of the "
        "training transcripts, built into DATA/lm)",
    )
    la.add_argument(
        "--lexicon", default=None, help="with --rescore-top and --lm: lexicon file, or auto (the LM's words)"
    )
    la.add_argument(
        "--startup-trials",
        type=nonnegative_int,
        default=None,
        help="random trials before TPE models the space (default: a third of --trials, 3 to 10)",
    )
    la.add_argument("--seed", type=int, default=None)
    la.add_argument("--objectives", default="wer", help="wer, or wer,params / wer,gflops for a Pareto front")
    la.add_argument(
        "--max-params", type=positive_float, default=None, help="skip (prune) candidates with more parameters"
    )
    la.add_argument(
        "--max-gflops",
        type=positive_float,
        default=None,
        help="skip candidates above this many forward GFLOPs per audio-second",
    )
    la.add_argument("--epochs", type=positive_int, default=None, help="override the space's train.epochs")
    la.add_argument(
        "--trial-seconds",
        type=positive_float,
        default=None,
        help="wall budget per trial (stops after the epoch that crosses it)",
    )
    la.add_argument(
        "--runs-dir", default="results/runs", help="the runs root: trials train in RUNS_DIR/STUDY-UID/trial_N"
    )
    la.add_argument(
        "--heartbeat",
        type=positive_int,
        default=30,
        help="seconds between a running trial's heartbeats; a worker silent for 4 is presumed dead and "
        "its trial re-queued (database storages)",
    )
    storage(la)
    device(la)
    la.set_defaults(func=_launch)

    def joins(sp):  # the options of a command that works on an existing study
        sp.add_argument("--study", required=True)
        sp.add_argument("--timeout", type=positive_float, default=None)
        storage(sp)
        device(sp)
        mounts(sp)

    re = sub.add_parser("resume", help="continue a study towards its target (re-queues trials of dead workers)")
    joins(re)
    re.set_defaults(func=_resume)

    wo = sub.add_parser("worker", help="join a study from any machine and train its trials until the target is met")
    joins(wo)
    wo.add_argument(
        "--dry-run",
        type=float,
        default=None,
        metavar="SECONDS",
        help="load test: sample and build each candidate, wait SECONDS, train nothing",
    )
    wo.set_defaults(func=_worker)

    sp = sub.add_parser(
        "storage-proxy", help="serve a storage to many workers over gRPC (they use --storage grpc://HOST:PORT)"
    )
    sp.add_argument(
        "--storage", required=True, help="the database behind the proxy (postgresql://... or sqlite:///...)"
    )
    sp.add_argument("--host", default="localhost", help="address to listen on (default localhost)")
    sp.add_argument("--port", type=int, default=13000)
    sp.set_defaults(func=_storage_proxy)

    ex = sub.add_parser("export", help="write a trial's run config (default: the best) as YAML for `stt train`")
    ex.add_argument("--study", required=True)
    ex.add_argument("--trial", type=int, default=None)
    ex.add_argument("-o", "--output", required=True)
    ex.add_argument("--weights", action="store_true", help="also copy the trial's best.pt beside the YAML")
    ex.add_argument(
        "--runs-dir", default=None, help="where this host mounts the study's runs root (default: the study's)"
    )
    storage(ex)
    ex.set_defaults(func=_export)

    co = sub.add_parser("compare", help="leaderboard, CSV and HTML/PNG report of one or more studies")
    co.add_argument("studies", nargs="+")
    co.add_argument("--top", type=positive_int, default=10)
    co.add_argument("--out", default=None, help="report folder (default results/compare/NAMES)")
    storage(co)
    co.set_defaults(func=_compare)

    de = sub.add_parser(
        "demo", help="the main job: synthesise the corpus if absent, run a short CPU study, export the best"
    )
    de.add_argument("--data", default="data/synth")
    de.add_argument("--hours", type=positive_float, default=1.0)
    de.add_argument("--space", default="small", help="a shipped space by name (small, seed) or a space YAML")
    de.add_argument("--study", default="demo")
    de.add_argument(
        "--trials", type=positive_int, default=60, help="target trials (default 60: the budget ends it first)"
    )
    de.add_argument(
        "--budget",
        type=positive_float,
        default=20 * 60,
        help="wall seconds for the study (default 20 min); a trial running then stops at its next epoch end",
    )
    de.add_argument("--seed", type=int, default=0)
    de.add_argument(
        "--epochs", type=positive_int, default=None, help="override the space's train.epochs (a quick look)"
    )
    de.add_argument(
        "--rescore-top",
        type=nonnegative_int,
        default=3,
        metavar="K",
        help="beam-decode the K best finished candidates with the corpus's lexicon and unigram LM at the end "
        "(default 3; 0: greedy only)",
    )
    de.add_argument("--runs-dir", default="results/runs")
    de.add_argument("--export", default="results/demo-best.yaml")
    storage(de)
    de.set_defaults(func=_demo)
    return p


def _not_interrupted(record: logging.LogRecord) -> bool:
    # Ctrl-C and the study's time budget are not errors: the study's own one-line log says what happened
    from search.objective import OutOfTime

    return not (record.exc_info and isinstance(record.exc_info[1], (KeyboardInterrupt, OutOfTime)))


def main(argv: list[str] | None = None) -> int:
    from stt.errors import STTError, one_line

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna logs a trial stopped by Ctrl-C as a failure with its whole traceback; the one line below says it.
    # On its handlers: a logger's own filters do not see records from its children (optuna.study._optimize).
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_not_interrupted)
    import warnings

    # Optuna flags heartbeats/retries as experimental and importance estimates on few trials; the CLI says what matters
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", module="optuna.importance")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except STTError as e:
        print(f"stt-search {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"stt-search {args.command}: interrupted; the current trial is marked and `stt-search resume` continues it",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
