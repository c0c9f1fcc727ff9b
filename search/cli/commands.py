"""What each ``stt-search`` command does with its parsed flags (the flags themselves: ``search.cli.parser``)."""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

from search.settings import StudySettings, WorkerOptions, options_from

log = logging.getLogger("search")


def launch(args) -> int:
    from search.space import load_space
    from search.study import create_study, launch

    space = load_space(args.space)
    settings = options_from(args, StudySettings, space_text=space.text, space_name=space.name)
    opts = options_from(args, WorkerOptions)
    if opts.workers > 1 or args.create_only:
        create_study(args.study, settings, opts.storage, enqueue=tuple(args.enqueue))
        if args.create_only:
            from search.storage import DEFAULT_STORAGE, redact

            print(
                f"study '{args.study}' created in {redact(opts.storage or DEFAULT_STORAGE)}; its workers join with "
                f"`stt-search worker --study {args.study}` or `stt-search slurm --study {args.study}`"
            )
            return 0
        return _local_workers(args, opts, runs_dir=settings.runs_dir)
    study = launch(
        args.study,
        settings,
        opts.storage,
        timeout=opts.timeout,
        device=opts.device,
        isolate=not opts.in_process,
        enqueue=tuple(args.enqueue),
    )
    return _after_run(study, opts.storage)


def _join(args, opts: WorkerOptions, **extra):
    """Work on an existing study from this process (resume and worker alike), with this host's mounts."""
    from search.study import run_study

    return run_study(
        args.study,
        opts.storage,
        timeout=opts.timeout,
        device=opts.device,
        isolate=not opts.in_process,
        data_dir=opts.data_mount,
        runs_dir=opts.runs_mount,
        **extra,
    )


def resume(args) -> int:
    opts = options_from(args, WorkerOptions)
    if opts.workers > 1:
        return _local_workers(args, opts, mounts=True)
    return _after_run(_join(args, opts), opts.storage)


def worker(args) -> int:
    """One worker: join the study and train its trials until the target is met (no leaderboard)."""
    from search.storage import DEFAULT_STORAGE, redact
    from search.study import count_finished, read_settings

    opts = options_from(args, WorkerOptions)
    if opts.workers > 1:
        return _local_workers(args, opts, mounts=True)
    study = _join(args, opts, dry_run=opts.dry_run)
    print(
        f"worker done: study '{study.study_name}' has {count_finished(study)}/{read_settings(study).trials} trials "
        f"finished; storage {redact(opts.storage or DEFAULT_STORAGE)}"
    )
    return 0


def _local_workers(args, opts: WorkerOptions, mounts: bool = False, runs_dir: str | None = None) -> int:
    """``--workers N``: N local ``stt-search worker`` processes on the study; the leaderboard once all are done.

    ``runs_dir``: this host's runs root (launch: its own --runs-dir); ``mounts``: pass this host's ``--data`` on
    (resume, worker; launch's is in the study already).
    """
    from search.storage import DEFAULT_STORAGE, load_study
    from search.study import count_finished, read_settings
    from search.workers import start_local_workers

    storage = opts.storage or DEFAULT_STORAGE
    codes = start_local_workers(
        args.study,
        opts.worker_env(),
        opts.workers,
        opts.device,
        opts.trials_per_device,
        opts.timeout,
        opts.data_mount if mounts else None,
        runs_dir if runs_dir is not None else opts.runs_mount,
        opts.in_process,
        opts.storage_file,
    )
    study = load_study(args.study, storage)
    rc = _after_run(study, opts.storage)
    failed = [c for c in codes if c != 0]
    if not failed:
        return rc
    # a lost worker is said; it is an error only when the others could not finish the study without it
    done = count_finished(study) >= read_settings(study).trials
    print(
        f"stt-search {args.command}: {len(failed)} of {len(codes)} workers exited with an error "
        f"(status {', '.join(map(str, failed))}){'; the others finished the study' if done else ''}",
        file=sys.stderr,
    )
    return rc if done else 1


def _after_run(study, storage: str | None) -> int:
    from search.results.compare import leaderboard, trials_frame
    from search.storage import DEFAULT_STORAGE, redact
    from search.study import count_finished, read_settings

    df = trials_frame(study.study_name, storage)
    print(leaderboard(df))
    target = read_settings(study).trials
    promoted = int(df["continues"].notna().sum()) if "continues" in df else 0
    more = f" (and {promoted} trials that continued promoted candidates)" if promoted else ""
    print(
        f"study '{study.study_name}': {count_finished(study)}/{target} trials finished{more}; "
        f"storage {redact(storage or DEFAULT_STORAGE)}"
    )
    return 0


def export(args) -> int:
    from search.results.export import export
    from search.trials import Attr

    opts = options_from(args, WorkerOptions)
    out, t = export(args.study, args.output, opts.storage, args.trial, args.weights, opts.runs_mount)
    print(f"trial {t.number} (dev WER {100 * t.user_attrs.get(Attr.DEV_WER, float('nan')):.1f}%) -> {out}")
    return 0


def compare(args) -> int:
    import pandas as pd

    from search.results.compare import leaderboard, trials_frame
    from search.results.report import write_report

    storage = options_from(args, WorkerOptions).storage
    df = pd.concat([trials_frame(n, storage) for n in args.studies], ignore_index=True)
    print(leaderboard(df, args.top))
    out = Path(args.out or Path("results") / "compare" / re.sub(r"[^\w.-]+", "_", "-".join(args.studies)).lstrip("."))
    html = write_report(df, out, args.studies, storage)
    print(f"report: {html}\ncsv:    {out / 'trials.csv'}")
    return 0


def demo(args) -> int:
    """The main job: corpus (synthesised if absent) -> short study -> leaderboard -> exported best config."""
    from search.results.export import export
    from search.space import load_space
    from search.storage import DEFAULT_STORAGE, existing_studies, redact
    from search.study import UID, launch, run_study
    from search.trials import Attr
    from stt.data.synth import SynthSettings, prepare_synth

    t0 = time.time()
    data = Path(args.data)
    if not (data / "synth.json").exists():
        print(f"synthesising the built-in corpus ({args.hours} h) into {data} ...", flush=True)
        prepare_synth(data, SynthSettings(hours=args.hours))
    storage = options_from(args, WorkerOptions).storage
    if UID in existing_studies(storage).get(args.study, {}):  # a complete study: resume it
        print(f"study '{args.study}' exists: resuming it", flush=True)
        study = run_study(args.study, storage, timeout=args.budget, runs_dir=args.runs_dir)
    else:
        space = load_space(args.space)
        settings = options_from(args, StudySettings, space_text=space.text, space_name=space.name, data_dir=str(data))
        study = launch(args.study, settings, storage, timeout=args.budget)
    _after_run(study, storage)
    path, t = export(args.study, Path(args.export), storage)
    print(f"best config (trial {t.number}, dev WER {100 * t.user_attrs[Attr.DEV_WER]:.1f}%): {path}")
    print(f"train it:   stt train --config {path} --data {data}")
    print(f"database:   {redact(storage or DEFAULT_STORAGE)}   [{(time.time() - t0) / 60:.1f} min]")
    return 0


def storage_proxy(args) -> int:
    from search.storage import serve_proxy

    opts = options_from(args, WorkerOptions)
    serve_proxy(opts.storage, args.host, args.port, args.insecure, args.tls_cert, args.tls_key)
    return 0


def slurm(args) -> int:
    """``stt-search slurm [submit|status|cancel] --study S``: the study's workers as a Slurm job array."""
    from search import slurm as cluster
    from search.storage import DEFAULT_STORAGE, load_study, redact
    from search.study import count_finished, read_settings

    opts = options_from(args, WorkerOptions)
    job = cluster.SlurmOptions(
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        partition=args.partition,
        time=args.time,
        signal_delay=args.signal_delay,
        sbatch=tuple(args.sbatch),
        logs=args.logs,
    )
    study = load_study(args.study, opts.storage)
    done = f"{count_finished(study)}/{read_settings(study).trials} trials finished"
    if args.action == "status":
        print("\n".join(cluster.status(study) or ["no Slurm job was submitted for this study"]))
        print(f"study '{args.study}': {done}")
        return 0
    if args.action == "cancel":
        ids = cluster.cancel(study)
        print(f"cancelled {', '.join(ids)}; their trials wait for the next worker" if ids else "no Slurm job to cancel")
        return 0
    argv = []
    for flag, value in (
        ("--storage-file", opts.storage_file and str(Path(opts.storage_file).resolve())),
        ("--data", args.data_mount),
        ("--runs-dir", args.runs_mount),
        ("--timeout", args.timeout),
    ):
        if value is not None:
            argv += [flag, str(value)]
    array = cluster.submit(study, job, argv, opts.worker_env())
    logs = study.user_attrs.get(cluster.JOBS, [{}])[-1].get("logs", "")
    print(f"submitted job array {array} ({args.workers} workers) on study '{args.study}' ({done})")
    print(f"logs:    {logs}\nstorage: {redact(opts.storage or DEFAULT_STORAGE)}")
    print(f"status:  stt-search slurm status --study {args.study}")
    return 0


def dashboard(args) -> int:
    """``stt-search dashboard --study S``: optuna-dashboard on 127.0.0.1 for the study's storage, until Ctrl-C.

    The port is bound before the URL is printed: the URL works the moment it is shown."""
    from wsgiref.simple_server import make_server

    from search.storage import load_study, open_storage
    from stt.core.errors import StudyError

    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise StudyError("optuna-dashboard is not installed: pip install -e '.[dashboard]'") from None
    opts = options_from(args, WorkerOptions)
    storage = open_storage(opts.storage)
    study = load_study(args.study, opts.storage, storage)
    sid = storage.get_study_id_from_name(study.study_name)
    try:
        server = make_server("127.0.0.1", args.port, wsgi(storage))
    except OSError as e:
        raise StudyError(f"--port {args.port}: cannot listen on 127.0.0.1 ({e.strerror})") from None
    url = f"http://127.0.0.1:{args.port}/dashboard/studies/{sid}"
    print(f"optuna-dashboard for study '{args.study}': {url}", file=sys.stderr, flush=True)
    print("(the storage's other studies are there too; Ctrl-C stops it)", file=sys.stderr, flush=True)
    with server:
        server.serve_forever()
    return 0
