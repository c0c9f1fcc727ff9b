"""What a trial's state means to a study: whether it counts towards the target, whether it is still in
play, and which process it belongs to."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED_FAILURES = ("error", "build_error")  # FAIL statuses that count towards the target (not killed workers)


def counts(t) -> bool:
    """A trial that counts towards the target: complete, pruned, or failed on its own (not a killed worker's).

    The target counts candidates: a trial that continues a paused candidate (search.asha) does not count.
    """
    if "continues" in t.user_attrs:
        return False
    return t.state in FINISHED or (t.state == TrialState.FAIL and t.user_attrs.get("status") in COUNTED_FAILURES)


def in_play(t) -> bool:
    """Counted, or on its way to be: running, or waiting to run (enqueued, re-queued); candidates only."""
    return counts(t) or ("continues" not in t.user_attrs and t.state in (TrialState.RUNNING, TrialState.WAITING))


def process_namespace() -> str:
    """This kernel boot and pid namespace: two workers with equal values can check each other's pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{socket.gethostname()}/{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return f"{socket.gethostname()}/unknown/{os.getpid()}"  # matches no other process: heartbeats decide


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
