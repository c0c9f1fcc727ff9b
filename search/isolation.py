"""One trial, one process: training runs in a child, so memory, the CUDA context and compile caches go
back to the system after every trial, and a crash takes down the trial, not the worker.

Children are forked from a fork server that has imported torch and the trainer once, so a trial starts
in milliseconds, from a clean process that never held an earlier trial's tensors (and never touched
CUDA before its own trial). The worker keeps the Optuna trial: the child sends each epoch's metrics
over a pipe and the worker answers whether to prune, so the child needs no access to the storage.

A child that dies (the kernel's OOM killer, a segfault, a CUDA device-side assert that kills the
process) fails its trial with that reason and the worker goes on. A worker that dies takes its child
with it: the child holds a lifeline pipe and exits when the worker's end closes, so a re-queued copy of
the trial never shares its run directory with a live orphan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from stt.core.files import locked

_ctx = None
log = logging.getLogger("search")


class ChildDied(RuntimeError):
    """The training process ended without a result (killed by a signal or a hard exit)."""


class ChildFailed(RuntimeError):
    """The training process raised; the message carries its traceback."""


class ChildInfeasible(ValueError):
    """The config cannot align with the corpus (stt.train.feasibility.InfeasibleError in the child)."""


def _context():
    global _ctx
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        # torch._dynamo too: building any torch optimizer imports it (1.0-1.3 s on 2 cores), which every trial's
        # child would otherwise pay again before its first step
        _ctx.set_forkserver_preload(["search.isolation", "stt.train.trainer", "torch._dynamo"])
    return _ctx


def train_in_child(job: dict, on_epoch: Callable[[int, dict], str | None]) -> dict:
    """Train ``job`` (see :func:`_child_main`) in a child process; returns the TrainResult as a dict.

    Raises ChildInfeasible, ChildFailed (with the child's traceback) or ChildDied (with the signal).
    KeyboardInterrupt here interrupts the child, waits for its checkpoint, and re-raises.
    """
    ctx = _context()
    ours, theirs = ctx.Pipe(duplex=True)
    life_keep, life_give = ctx.Pipe(duplex=False)  # child reads life_keep; EOF when our life_give closes
    child = ctx.Process(target=_child_main, args=(job, theirs, life_keep), name=f"stt-trial-{job.get('trial')}")
    child.start()
    theirs.close()
    life_keep.close()
    log.info(
        "trial %s: training in process %d (worker %d, %s)", job.get("trial"), child.pid, os.getpid(), job["run_dir"]
    )
    try:
        while True:
            try:
                kind, payload = ours.recv()
            except EOFError:
                break
            if kind == "epoch":  # sent after the epoch's checkpoint is on disk
                m = payload["metrics"]
                if m.get("probe"):
                    log.info(
                        "trial %s: after %.2f of epoch 1 dev loss %.3f", job.get("trial"), m["probe"], m["dev_loss"]
                    )
                else:
                    log.info(
                        "trial %s: epoch %d dev WER %.1f%%", job.get("trial"), payload["epoch"], 100 * m["dev_wer"]
                    )
                ours.send(on_epoch(payload["epoch"], m))
            elif kind == "result":
                child.join()
                return payload
            elif kind == "infeasible":
                child.join()
                raise ChildInfeasible(payload)
            elif kind == "error":
                child.join()
                raise ChildFailed(payload)
            elif kind == "interrupted":
                child.join()
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if child.is_alive():
            os.kill(child.pid, signal.SIGINT)  # the child checkpoints and writes result.json, then exits
            child.join()
        raise
    finally:
        life_give.close()
        ours.close()
    child.join()
    code = child.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's OOM killer sends SIGKILL: out of memory?)" if -code == signal.SIGKILL else ""
        raise ChildDied(f"training process {child.pid} was killed by {name}{hint}")
    raise ChildDied(f"training process {child.pid} exited with status {code} before sending a result")


@contextlib.contextmanager
def hold_run_dir(run_dir: str | Path):
    """An exclusive lock on a run directory for as long as a trial trains in it.

    A stale-heartbeat re-queue can start a copy of a trial while its first worker still lives (a network
    partition): the second one must not write the same checkpoints, so it fails at once, naming the dir.
    """
    run_dir = Path(run_dir)
    lock = run_dir / ".lock"
    held = contextlib.ExitStack()
    try:
        fd = held.enter_context(locked(lock, wait=False))
    except BlockingIOError:
        try:
            holder = lock.read_text().strip()
        except OSError:
            holder = ""
        raise RunDirBusy(
            f"run directory {run_dir} is in use by another training process ({holder or 'unknown'})"
        ) from None
    with held:
        os.write(fd, f"{socket.gethostname()}:{os.getpid()}\n".encode())
        yield


class RunDirBusy(RuntimeError):
    """Another live process trains in this run directory."""


def _child_main(job: dict, conn, lifeline) -> None:
    """The child: open the data, train, send epochs and the result back."""

    def watch():
        try:
            lifeline.recv()
        except (EOFError, OSError):
            pass
        os._exit(70)  # the worker is gone: stop before a re-queued copy of this trial starts beside us

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's SIGTERM checkpoints like Ctrl-C
    import torch

    from stt.data.training_data import open_training_data
    from stt.train.feasibility import InfeasibleError
    from stt.train.run_config import load_run_config
    from stt.train.trainer import Trainer

    device = job.get("device")
    if device and device.startswith("cuda") and ":" in device:
        torch.cuda.set_device(torch.device(device))

    def on_epoch(epoch, metrics):
        conn.send(("epoch", {"epoch": epoch, "metrics": metrics}))
        return conn.recv()

    try:
        run = load_run_config(job["run"])
        data = open_training_data(job["data_dir"], run.frontend, progress=False, device=device)
        trainer = Trainer(
            run,
            data,
            job["run_dir"],
            device=device,
            max_seconds=job.get("max_seconds"),
            progress=job.get("progress", False),
            probe=job.get("probe", 0.0),
        )
        with hold_run_dir(job["run_dir"]):
            result = trainer.fit(resume=job.get("resume", False), on_epoch=on_epoch)
        conn.send(("result", dataclasses.asdict(result)))
    except InfeasibleError as e:
        conn.send(("infeasible", str(e)))
    except KeyboardInterrupt:
        conn.send(("interrupted", None))
    except BaseException as e:
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def call_in_child(fn: Callable, *args):
    """``fn(*args)`` in a fresh child of the fork server (its tensors never land in the worker); returns its value.

    ``fn`` must be importable by name (a module-level function). Raises ChildFailed with the child's
    traceback, or ChildDied.
    """
    ctx = _context()
    ours, theirs = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_call_main, args=(fn, args, theirs), name=f"stt-{fn.__name__}")
    child.start()
    theirs.close()
    try:
        kind, payload = ours.recv()
    except EOFError:
        child.join()
        raise ChildDied(
            f"process {child.pid} ({fn.__name__}) ended with status {child.exitcode} before its result"
        ) from None
    finally:
        ours.close()
    child.join()
    if kind == "error":
        raise ChildFailed(payload)
    return payload


def _call_main(fn, args, conn) -> None:
    try:
        conn.send(("result", fn(*args)))
    except BaseException as e:
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        conn.close()
