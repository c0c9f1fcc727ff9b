"""Workers as a Slurm job array, through submitit: submit, show, cancel; and the array task itself.

``stt-search slurm --study S --workers N`` submits one array of N tasks; each task is one ``stt-search worker``
on the study's storage, so the study needs a storage every node reaches (PostgreSQL, the gRPC proxy, or a
journal file on the shared file system: ``docs/cluster.md``). The URL travels in the job's environment (sbatch
exports the submitting shell's) or as a ``--storage-file`` path, never in the job's arguments or files. The
array's id is stored on the study, so ``stt-search slurm status|cancel --study S`` works from any host.

Time limits and preemption: sbatch asks Slurm for a warning signal (``--signal=USR2@SECONDS``, submitit's) that
long before the limit. A task that gets it (or SIGUSR1) stops like Ctrl-C: the trial's training process writes
a checkpoint mid-epoch, the trial goes back to WAITING (not failed, so no failure streak), and the task
requeues itself (``scontrol requeue``). Any worker that asks next, the requeued task or another, continues the
same trial from its checkpoint in the same run directory. A SIGTERM (``scancel``, the limit itself) does the
same without the requeue.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from stt.core.errors import StudyError
from stt.core.signals import PREEMPT_SIGNALS, STOP_SIGNALS

JOBS = "slurm_jobs"  # the study user attribute listing its arrays: [{"id": "123", "tasks": 3, "logs": "..."}]
TIMEOUT = 60  # seconds a Slurm command may take


@dataclasses.dataclass
class SlurmOptions:
    """What each array task asks of Slurm."""

    workers: int = 1  # array tasks, each one worker
    gpus_per_worker: int = 0  # --gres=gpu:G (0: none)
    cpus_per_worker: int = 1  # --cpus-per-task; the worker trains with this many threads
    partition: str | None = None
    time: int = 60  # minutes per task before Slurm stops it (a requeued task starts its time afresh)
    signal_delay: int = 120  # seconds before the limit that the warning signal comes: enough for a checkpoint
    sbatch: tuple[str, ...] = ()  # extra sbatch options, KEY=VALUE (e.g. qos=high, constraint=a100)
    logs: str | None = None  # the tasks' stdout/stderr (default results/slurm/<study>)

    def __post_init__(self):
        self.extra = _extra(self.sbatch)  # checked when built: a bad option fails before anything is submitted


def _extra(options: tuple[str, ...]) -> dict:
    out = {}
    for item in options:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise StudyError(f"--sbatch {item!r}: expected an sbatch option as KEY=VALUE or KEY (e.g. qos=high)")
        out[key] = value if eq else True
    return out


def _need(command: str) -> None:
    if shutil.which(command) is None:
        raise StudyError(f"{command}: not found; stt-search slurm runs on a host with Slurm's client commands")


def _slurm(*cmd: str) -> subprocess.CompletedProcess:
    _need(cmd[0])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def submit(study, opts: SlurmOptions, worker_argv: list[str], env: dict[str, str]) -> str:
    """Submit ``opts.workers`` worker tasks on ``study`` (an ``optuna.Study``); returns the array's job id.

    Args:
        worker_argv: each task's ``stt-search worker`` flags, the study's name aside (never the storage URL).
        env: what the tasks need in their environment to open the storage (the URL, when it is not in a file).
    """
    import submitit

    _need("sbatch")
    logs = Path(opts.logs or Path("results") / "slurm" / study.study_name).resolve()
    executor = submitit.SlurmExecutor(folder=logs)
    params = dict(
        job_name=f"stt-{study.study_name}",
        time=opts.time,
        cpus_per_task=opts.cpus_per_worker,
        signal_delay_s=opts.signal_delay,
        array_parallelism=opts.workers,
        additional_parameters=opts.extra,
    )
    if opts.partition:
        params["partition"] = opts.partition
    if opts.gpus_per_worker:
        params["gres"] = f"gpu:{opts.gpus_per_worker}"
    executor.update_parameters(**params)
    task = SlurmTask(study.study_name, list(worker_argv))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # sbatch exports this process's environment to the tasks
    try:
        jobs = executor.map_array(task, range(opts.workers))
    except Exception as e:  # sbatch refused it (a partition that does not exist, a bad option): its one line
        said = str(e).strip().splitlines() or [type(e).__name__]
        raise StudyError(f"sbatch: {said[-1][:300]}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    array = jobs[0].job_id.split("_")[0]
    study.set_user_attr(JOBS, [*_jobs(study), {"id": array, "tasks": opts.workers, "logs": str(logs)}])
    return array


def _jobs(study) -> list[dict]:
    """The study's arrays, as stored; an id that is not a Slurm job id (digits) is dropped: the storage is not
    trusted, and an id goes on scancel's command line."""
    stored = study.user_attrs.get(JOBS, [])
    return [j for j in stored if isinstance(j, dict) and re.fullmatch(r"\d{1,12}", str(j.get("id", "")))]


def status(study) -> list[str]:
    """One line per task of the study's arrays still known to Slurm: id, state, time used, node or reason."""
    lines = []
    for job in _jobs(study):
        out = _slurm("squeue", "-h", "-r", "-j", job["id"], "-o", "%i %T %M %R")
        found = [line for line in out.stdout.splitlines() if line.strip()]
        lines += found or [f"{job['id']}: no task queued or running (finished or cancelled; logs in {job['logs']})"]
    return lines


def cancel(study) -> list[str]:
    """Cancel the study's arrays (their running trials checkpoint and wait for the next worker)."""
    ids = [j["id"] for j in _jobs(study)]
    if ids:
        out = _slurm("scancel", *ids)
        if out.returncode != 0:
            raise StudyError(f"scancel {' '.join(ids)}: {out.stderr.strip()[:300]}")
    return ids


@dataclasses.dataclass
class SlurmTask:
    """One array task: an ``stt-search worker`` on the study, as a child of the process submitit starts.

    Submitit pickles this object into the log folder: it holds flags only, never the storage URL (the worker
    inherits it through the environment). Slurm signals every process of the task, so the worker gets its
    stop signal first-hand; this process only remembers which signal came, to requeue the task after a warning.
    """

    study: str
    worker_argv: list[str]

    def __call__(self, index: int) -> int:
        import sys

        from search.workers import slurm_task

        got: list[int] = []
        for s in STOP_SIGNALS:
            signal.signal(s, lambda signum, frame: got.append(signum))  # the worker checkpoints; this one waits
        env = dict(os.environ)
        cpus = env.get("SLURM_CPUS_PER_TASK")
        if cpus and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = cpus  # torch would take every core of the node, not the task's
        worker = subprocess.Popen(
            [sys.executable, "-m", "search.cli", "worker", "--study", self.study, *self.worker_argv], env=env
        )
        rc = worker.wait()  # a signal's handler returns and the wait goes on (PEP 475)
        warned = [s for s in got if s in PREEMPT_SIGNALS]
        # 130: the worker stopped after its checkpoint; killed by the warning itself: it came before the worker
        # had its handlers (opening the corpus), so there was no trial to checkpoint
        if warned and rc in (130, -signal.SIGUSR1, -signal.SIGUSR2):
            me = slurm_task()
            name = signal.Signals(warned[0]).name
            print(f"worker task {me}: {name} before its time limit; requeueing it", file=sys.stderr, flush=True)
            out = subprocess.run(["scontrol", "requeue", me], capture_output=True, text=True, timeout=TIMEOUT)
            if out.returncode != 0:
                print(f"scontrol requeue {me}: {out.stderr.strip()}", file=sys.stderr, flush=True)
            return rc
        if rc not in (0, 130):
            raise RuntimeError(f"stt-search worker exited with status {rc} (its error is in this log above)")
        return rc
