"""One trial, one process: training runs in a child, so memory, the CUDA context and compile caches go
back to the system after every trial, and a crash takes down the trial, not the worker.

Children are forked from a fork server that has imported torch and the trainer once, and opened the
worker's corpus once (the prepared caches' indexes, :func:`stt.data.training_data.reopen`), so a trial starts
in a fraction of a second whatever the corpus's size, from a clean process that never held an earlier trial's
tensors (and never touched CUDA before its own trial). A trial is a :class:`TrainJob`: plain data, the one
place a search builds a Trainer. The worker keeps the Optuna trial: the child sends each epoch's metrics over
a pipe and the worker answers whether to prune, so the child needs no access to the storage.

A child that dies (the kernel's OOM killer, a segfault, a CUDA device-side assert that kills the
process) fails its trial with that reason and the worker goes on. A worker that dies takes its child
with it: the child holds a lifeline pipe and exits when the worker's end closes, so a re-queued copy of
the trial never shares its run directory with a live orphan.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable

from stt.core.signals import PREEMPT_SIGNALS, STOP_SIGNALS, ignored, stop_signals_held
from stt.data.training_data import TrainingData, reopen

_ctx = None
log = logging.getLogger("search")
PRELOAD_ENV = "STT_SEARCH_PRELOAD"  # set only while the fork server starts: the corpus it opens for its children


class ChildDied(RuntimeError):
    """The training process ended without a result (killed by a signal or a hard exit)."""


class ChildFailed(RuntimeError):
    """The training process raised; the message carries its traceback."""


class ChildInfeasible(ValueError):
    """The config cannot align with the corpus (stt.train.feasibility.InfeasibleError in the child)."""


class ChildBusy(RuntimeError):
    """The run directory was held by another process when the child came to lock it (RunDirBusy in the child)."""


def _preloaded() -> TrainingData | None:
    """In the fork server (and so in every child): the worker's corpus, opened once when the server started."""
    where = os.environ.get(PRELOAD_ENV)
    if not where:
        return None
    try:
        return reopen(json.loads(where))
    except Exception:  # a child opens it itself, and reports any problem with the trial
        return None


_PRELOADED = _preloaded()


def _context():
    global _ctx
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        # torch._dynamo too: building any torch optimizer imports it (1.0-1.3 s on 2 cores), which every trial's
        # child would otherwise pay again before its first step
        _ctx.set_forkserver_preload(["search.isolation", "stt.train.trainer", "torch._dynamo"])
    return _ctx


def start(data: dict | None = None) -> None:
    """Start this process's fork server (once; later calls change nothing), with the corpus ``data``
    (``TrainingData.where()``) opened in it, so that every child it forks starts with the corpus in memory."""
    from multiprocessing import forkserver

    _context()
    if data is not None:
        os.environ[PRELOAD_ENV] = json.dumps(data)
    # the helpers (the fork server, multiprocessing's resource tracker) start ignoring the stop signals a
    # scheduler sends to every process of a job: Slurm's warning (SIGUSR1/2) and scancel's SIGTERM kill by
    # default, and a dead fork server would make the worker think its training process ended (the lifeline would
    # then end that process mid-checkpoint); the worker and its training process set their own handlers, and the
    # fork server still exits when the worker closes its end
    try:
        with ignored((*PREEMPT_SIGNALS, signal.SIGTERM)):
            forkserver.ensure_running()
    finally:
        os.environ.pop(PRELOAD_ENV, None)  # for the server alone: no other process of this worker's reads it


def trial_corpus(where: dict) -> TrainingData:
    """A trial's corpus: the fork server's copy when it is the same corpus, else its caches reopened."""
    if _PRELOADED is not None and _PRELOADED.where() == where:
        return _PRELOADED
    return reopen(where)


@dataclasses.dataclass
class TrainJob:
    """One trial's training as plain data: what a child process (or this one) needs to build its Trainer."""

    run: dict  # the run config (RunConfig.to_dict())
    data: dict  # where the corpus's prepared caches are (TrainingData.where())
    run_dir: str  # the trial's run directory
    device: str | None = None
    max_seconds: float | None = None  # the per-trial wall budget
    resume: bool = False  # continue the checkpoint in run_dir
    progress: bool = False
    probe: float = 0.0  # the fraction of epoch 1 scored as the lowest rung (0: none)
    trial: int | None = None  # the trial's number, for log lines
    grow_from: dict | None = None  # start from a trained run's weights, grown: {run_dir, morphs} (not on resume)

    def train(
        self,
        on_epoch: Callable[[int, dict], str | None],
        data: TrainingData | None = None,
        on_start: Callable[[], str | None] | None = None,
    ) -> dict | None:
        """Build the Trainer (the one place a search does) and train; the TrainResult as a dict.

        Args:
            data: the opened corpus (this worker's); None opens :attr:`data`, from the fork server's copy when
                it is the same corpus.
            on_start: asked once the run directory is locked and before anything is written in it; ``"stop"``
                (the trial is no longer this worker's) returns None untrained.
        """
        from stt.train.run import hold_run_dir
        from stt.train.run_config import load_run_config
        from stt.train.trainer import Trainer

        run = load_run_config(self.run)
        init = None
        if self.grow_from is not None and not self.resume:  # a resumed child starts from its own checkpoint
            from stt.core.errors import ConfigError
            from stt.train.run import grown_weights

            parent, morphs = self.grow_from["run_dir"], self.grow_from["morphs"]
            layers, init = grown_weights(parent, morphs)
            if layers != run.layers:
                raise ConfigError(f"{parent} grown by {morphs} is not the trial's {run.layers!r}")
        trainer = Trainer(
            run,
            data if data is not None else trial_corpus(self.data),
            self.run_dir,
            device=self.device,
            max_seconds=self.max_seconds,
            progress=self.progress,
            probe=self.probe,
            init=init,
        )
        with hold_run_dir(self.run_dir):
            if on_start is not None and on_start() == "stop":
                return None
            return dataclasses.asdict(trainer.fit(resume=self.resume, on_epoch=on_epoch))


def train_in_child(
    job: TrainJob, on_epoch: Callable[[int, dict], str | None], on_start: Callable[[], str | None] | None = None
) -> dict | None:
    """Train ``job`` in a child process; returns the TrainResult as a dict (None: ``on_start`` said stop).

    Raises ChildInfeasible, ChildBusy (another process holds the run directory), ChildFailed (with the child's
    traceback) or ChildDied (with the signal).
    KeyboardInterrupt here interrupts the child, waits for its checkpoint, and re-raises.
    """
    start(job.data)  # the first trial's corpus is the worker's: its fork server opens it once
    ctx = _context()
    ours, theirs = ctx.Pipe(duplex=True)
    life_keep, life_give = ctx.Pipe(duplex=False)  # child reads life_keep; EOF when our life_give closes
    child = ctx.Process(target=_child_main, args=(job, theirs, life_keep), name=f"stt-trial-{job.trial}")
    child.start()
    theirs.close()
    life_keep.close()
    log.info("trial %s: training in process %d (worker %d, %s)", job.trial, child.pid, os.getpid(), job.run_dir)
    try:
        while True:
            try:
                kind, payload = ours.recv()
            except EOFError:
                break
            if kind == "start":  # the run directory is the child's; may it write there?
                ours.send(on_start() if on_start is not None else None)
            elif kind == "epoch":  # sent after the epoch's checkpoint is on disk
                m = payload["metrics"]
                if m.get("probe"):
                    log.info("trial %s: after %.2f of epoch 1 dev loss %.3f", job.trial, m["probe"], m["dev_loss"])
                else:
                    log.info("trial %s: epoch %d dev WER %.1f%%", job.trial, payload["epoch"], 100 * m["dev_wer"])
                try:
                    answer = on_epoch(payload["epoch"], m)
                except Exception:  # the worker's side failed (its storage, a full disk): the child stops cleanly
                    _stop(child, ours)
                    raise
                ours.send(answer)
            elif kind == "result":
                child.join()
                return payload
            elif kind == "infeasible":
                child.join()
                raise ChildInfeasible(payload)
            elif kind == "busy":
                child.join()
                raise ChildBusy(payload)
            elif kind == "error":
                child.join()
                raise ChildFailed(payload)
            elif kind == "interrupted":
                child.join()
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        # the child checkpoints and writes result.json, then exits; a second signal here must not make this
        # process exit first (its lifeline would end the child mid-save)
        with stop_signals_held():
            if child.is_alive():
                os.kill(child.pid, signal.SIGINT)  # a no-op when the same signal reached it already
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


def _stop(child, ours) -> None:
    """Ask a child waiting for an epoch's answer to stop (it keeps the checkpoint it has just written), and wait
    for it to end: a child that exits on its own releases what it holds (the run directory's lock, semaphores)."""
    try:
        ours.send("prune")
        while True:
            kind, _ = ours.recv()
            if kind not in ("epoch", "start"):
                break
            ours.send("prune" if kind == "epoch" else "stop")
    except (EOFError, OSError):
        pass
    child.join(timeout=60)


def _child_main(job: TrainJob, conn, lifeline) -> None:
    """The child: train the job, send epochs and the result back."""

    def watch():
        try:
            lifeline.recv()
        except (EOFError, OSError):
            pass
        os._exit(70)  # the worker is gone: stop before a re-queued copy of this trial starts beside us

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
    for stop in STOP_SIGNALS:  # a scheduler's SIGTERM or early warning (USR1/USR2) checkpoints like Ctrl-C
        signal.signal(stop, signal.default_int_handler)
    import torch

    from stt.train.feasibility import InfeasibleError
    from stt.train.run import RunDirBusy

    if job.device and job.device.startswith("cuda") and ":" in job.device:
        torch.cuda.set_device(torch.device(job.device))

    def on_epoch(epoch, metrics):
        conn.send(("epoch", {"epoch": epoch, "metrics": metrics}))
        return conn.recv()

    def on_start():
        conn.send(("start", None))
        return conn.recv()

    try:
        conn.send(("result", job.train(on_epoch, on_start=on_start)))
    except InfeasibleError as e:
        conn.send(("infeasible", str(e)))
    except RunDirBusy as e:
        conn.send(("busy", str(e)))
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
