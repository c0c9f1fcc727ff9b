"""Stop signals: what asks a process to stop, and holding them off while it saves what it must.

A scheduler asks a job to stop with SIGTERM (``scancel``, a time limit) or, some time before the limit, with a
signal of the job's choosing (Slurm's ``--signal=USR2@120``); a terminal asks with SIGINT. Slurm sends them to
every process of the job at once, so a training process and the worker that started it may both be told to
stop, and a second signal can arrive while the first one's checkpoint is being written.
"""

from __future__ import annotations

import contextlib
import signal
import threading

# Every signal this package treats as "stop after a checkpoint" (Ctrl-C, kill/scancel, Slurm's early warnings).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# The ones a scheduler sends ahead of a time limit or a preemption: the job comes back (requeued) afterwards.
PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


@contextlib.contextmanager
def ignored(signals):
    """Ignore ``signals`` inside the block, then put their handlers back. An ignored signal stays ignored across
    fork and exec, so processes started inside the block ignore them for good. Only the main thread may change
    handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def stop_signals_held():
    """Ignore further stop signals inside the block (a checkpoint being written, a child being waited for).

    Ignored, not deferred: the process is already stopping, and a deferred one would interrupt what follows
    the block (the run's result file).
    """
    return ignored(STOP_SIGNALS)


@contextlib.contextmanager
def stop_signals_deferred():
    """Hold a stop signal that arrives inside the block until it ends, then deliver it to the handler in place.

    For bookkeeping that must not be cut in two (an epoch counted, its metrics written, its checkpoint saved):
    the signal still stops the process, right after. Done with Python-level handlers, which always run in the
    main thread (a blocked signal mask would not hold: any other thread may take a process-directed signal).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in STOP_SIGNALS}
    ok = False
    try:
        yield
        ok = True
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if got and ok:
            signal.raise_signal(got[0])
