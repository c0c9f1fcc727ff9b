"""Workers: the processes that train a study's trials, how they start side by side, and how a dead one's trial
is found and handed to another.

A RUNNING trial names its worker (``worker``: host:pid, ``worker_ns``: kernel boot and pid namespace). A worker
on the same host and namespace judges it by its pid at once; elsewhere, RDB storages judge it by its heartbeat
(Optuna's ``RetryHeartbeatStaleTrialCallback``). A dead worker's trial is failed and re-queued: the copy keeps
its parameters and user attributes, hence its run directory, and resumes from the last checkpoint there.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from search.storage import stable_enough
from search.trials import Attr, Status, counts, status_of

log = logging.getLogger("search")


_received: int | None = None  # the last stop signal this process's handler received


def on_stop_signal(signum, frame) -> None:
    """The worker's handler for a scheduler's stop signals (SIGTERM, SIGUSR1, SIGUSR2): stop like Ctrl-C (the
    trial checkpoints and is left waiting), remembering which signal it was (:func:`received_stop`)."""
    global _received
    _received = signum
    raise KeyboardInterrupt


def received_stop() -> int | None:
    """The stop signal :func:`on_stop_signal` last received in this process (None: none, e.g. Ctrl-C)."""
    return _received


def process_namespace() -> str:
    """This kernel boot and pid namespace: two workers with equal values can check each other's pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{socket.gethostname()}/{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return f"{socket.gethostname()}/unknown/{os.getpid()}"  # matches no other process: heartbeats decide


def pid_alive(pid: int) -> bool:
    """Whether a process runs. A zombie does not: it has exited, and only its parent has not reaped it yet (a
    launch that started local workers reaps them in order, so a killed one can stay a zombie for a long time)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]  # after "pid (name)"
    except (OSError, IndexError):
        return True  # no /proc: the signal's answer stands
    return state not in ("Z", "X")


def claim(trial: optuna.Trial) -> None:
    """Name this process as the trial's worker: first thing, so a resumer can judge the trial by it."""
    trial.set_user_attr(Attr.WORKER, f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr(Attr.WORKER_NS, process_namespace())  # whether a resumer may judge this pid
    task = slurm_task()
    if task:
        trial.set_user_attr(Attr.SLURM_TASK, task)  # which job's log tells this trial's story


def slurm_task() -> str:
    """The Slurm job this process runs in (``ARRAYID_TASK`` for an array task); empty outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")


def rss_mb() -> float:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def requeue_dead_trials(study: optuna.Study, orphan_after: float = 120.0) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker process is gone, and Ctrl-C'd trials.

    "Gone" is decided by pid only for workers in this very pid namespace (same kernel boot, same
    namespace: containers often share a hostname, and a pid means nothing across namespaces); the
    others are failed once their heartbeat is stale. A RUNNING trial that names no worker
    ``orphan_after`` seconds after it started was asked for by a worker killed before it wrote a
    line (or a heartbeat): it trained nothing and is failed, not counted, so a new trial takes its place.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    here = process_namespace()
    requeued = []
    with stable_enough():
        retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
    now = datetime.datetime.now()
    for t in trials:
        if _orphaned(t, now, orphan_after):
            with contextlib.suppress(ValueError, RuntimeError):  # finished meanwhile: another resumer
                optuna.Trial(study, t._trial_id).set_user_attr(Attr.STATUS, str(Status.ORPHANED))
                study.tell(t.number, state=TrialState.FAIL)
            continue
        pid = t.user_attrs.get(Attr.WORKER, "").rpartition(":")[2]
        dead = (
            t.state == TrialState.RUNNING
            and t.user_attrs.get(Attr.WORKER_NS) == here
            and pid.isdigit()
            and not pid_alive(int(pid))
        )
        interrupted = t.state == TrialState.FAIL and status_of(t) == Status.INTERRUPTED and t.number not in retried
        if dead:
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # already finished: another resumer got there first
                continue
        if dead or interrupted:
            retry(study, study.get_trials(deepcopy=False)[t.number])  # a trial's number is its index
            requeued.append(t.number)
    with stable_enough():
        optuna.storages.fail_stale_trials(study)  # other hosts' trials, once their heartbeat is stale
    return requeued


def _orphaned(t, now: datetime.datetime, orphan_after: float) -> bool:
    return (
        t.state == TrialState.RUNNING
        and not t.user_attrs.get(Attr.WORKER)  # none yet, or a waiting trial's cleared one
        and t.datetime_start is not None
        and (now - t.datetime_start).total_seconds() > orphan_after
    )


def more_to_do(study: optuna.Study, target: int, storage, deadline: float | None, orphan_after: float = 120.0) -> bool:
    """After this worker's last trial: wait while other workers' trials run, in case one of them dies.

    The target counts running trials, so a worker stops asking once enough are running; if one of those
    workers then dies, its trial must still be finished. So a worker lingers until every running trial
    has finished or been failed as dead (its pid gone on this host, or its heartbeat stale elsewhere) and
    re-queued, and returns True when a re-queued copy is waiting for it. Storages without heartbeats
    (the gRPC proxy) cannot tell a dead worker from a slow one: there it does not wait.
    """
    interval = storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.RDBStorage) else None
    while deadline is None or time.time() < deadline:
        requeue_dead_trials(study, orphan_after)
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return True
        if sum(1 for t in trials if counts(t)) >= target:
            return False
        if not any(t.state == TrialState.RUNNING for t in trials):
            return True  # short of the target with nothing running (a racer stepped aside): ask again
        if not interval:
            return False
        time.sleep(min(interval, 5))
    return False


def worker_devices(workers: int, device: str | None, per_device: int) -> list[str | None]:
    """One device per local worker: round robin over the visible GPUs, ``per_device`` workers each."""
    import torch

    if device or not torch.cuda.is_available():
        return [device] * workers
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [gpus[(i // per_device) % len(gpus)] for i in range(workers)]


def start_local_workers(
    study: str,
    storage_env: dict[str, str],
    workers: int,
    device: str | None = None,
    per_device: int = 1,
    timeout: float | None = None,
    data: str | None = None,
    runs_dir: str | None = None,
    in_process: bool = False,
    storage_file: str | None = None,
) -> list[int]:
    """``--workers N``: N ``stt-search worker`` processes on one study; waits for them, returns their exit codes.

    ``storage_env``: the storage URL as the workers' environment (``WorkerOptions.worker_env``), or
    ``storage_file``: the file holding it; never on their command lines, where every user of the host reads it.
    """
    procs = []
    for i, dev in enumerate(worker_devices(workers, device, per_device)):
        cmd = [sys.executable, "-m", "search.cli", "worker", "--study", study]
        for flag, value in (
            ("--storage-file", storage_file),
            ("--device", dev),
            ("--timeout", timeout),
            ("--data", data),
            ("--runs-dir", runs_dir),
        ):
            if value is not None:
                cmd += [flag, str(value)]
        if in_process:
            cmd.append("--in-process")
        env = {**os.environ, **storage_env}
        if not (dev or "").startswith("cuda") and "OMP_NUM_THREADS" not in env:
            # CPU workers share the cores: each takes its share (torch would give every one all of them,
            # and oversubscribed threads spin); measured on 2 cores, two 1-thread workers train 1.24x the
            # audio per second of one 2-thread worker
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
        procs.append(subprocess.Popen(cmd, env=env))
        log.info("worker %d: pid %d on %s", i, procs[-1].pid, dev or "the default device")
    return [p.wait() for p in procs]
