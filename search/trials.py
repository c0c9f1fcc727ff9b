"""The vocabulary of trial records: what a trial's user attributes are called, what its ``status`` can be,
and what each state counts for. Every module that writes or reads a trial says it in these words.

A trial's record, readable by any Optuna tool: its parameters, its intermediate values (the dev signal per
step, see ``search.pruners``), and the user attributes named by :class:`Attr`.
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from stt.core.errors import StudyError
from stt.train.trainer import RunStatus


class Attr(enum.StrEnum):
    """The user attributes a trial may carry."""

    # what the candidate is
    CONFIG = "config"  # the run config, as JSON
    CONFIG_HASH = "config_hash"  # identity of the normalised config: equal hashes train the same model
    PARAMS = "params"  # parameters of the built model
    GFLOPS = "gflops_per_second"  # forward GFLOPs per second of input audio
    SEED = "seed"  # the seed config it was enqueued from (the space's ``seeds:``, ``launch --enqueue``)
    # how it went
    STATUS = "status"  # a :class:`Status`
    REASON = "reason"  # one line: why it ended so
    DEV_WER = "dev_wer"  # best dev WER (the objective), and its CER
    DEV_CER = "dev_cer"
    TEST_WER = "test_wer"  # with the best dev weights, when the corpus has a test split
    TEST_CER = "test_cer"
    EPOCHS = "epochs"  # epochs trained by the candidate so far (a fraction after a probe)
    HISTORY = "history"  # dev loss, CER and WER per epoch
    WALL_SECONDS = "wall_seconds"  # wall time of the candidate's run, all its trials
    ELAPSED = "elapsed"  # the same, updated each epoch while it trains (a pruner reads its pace)
    AUDIO_SECONDS_PER_SECOND = "audio_seconds_per_second"  # training throughput
    DEVICE = "device"
    PRECISION = "precision"  # "fp32" or "bf16"
    VERSION = "version"  # stt's version
    # where and by whom
    RUN_DIR = "run_dir"  # its run directory, relative to the runs root: a label for people, never read for a path
    RESUMED = "resumed"  # whether it continued a checkpoint
    WORKER = "worker"  # host:pid of the worker that runs it
    WORKER_NS = "worker_ns"  # that worker's kernel boot and pid namespace (see search.workers)
    SLURM_TASK = "slurm_task"  # the Slurm job (array_task) the worker ran in, when it did (search.slurm)
    # how trials relate
    CANDIDATE = "candidate"  # the number of the candidate's first trial (re-queued copies and promotions keep it)
    CONTINUES = "continues"  # on a promotion: the paused trial it continues
    DUPLICATE_OF = "duplicate_of"  # the earlier trial whose result it reused
    GROWTH = "growth"  # a candidate grown from a trained one: {parent, morphs, epochs, lr} (search.study's stretch)


# What a finished training run reports, copied onto its trial; the leaderboard's columns start with these.
METRICS = (
    Attr.STATUS,
    Attr.REASON,
    Attr.DEV_WER,
    Attr.DEV_CER,
    Attr.TEST_WER,
    Attr.TEST_CER,
    Attr.PARAMS,
    Attr.GFLOPS,
    Attr.EPOCHS,
    Attr.WALL_SECONDS,
    Attr.AUDIO_SECONDS_PER_SECOND,
    Attr.DEVICE,
    Attr.PRECISION,
    Attr.VERSION,
    Attr.RUN_DIR,
)
# The user attributes ``search.results.compare.trials_frame`` turns into columns.
COLUMNS = (
    *METRICS,
    Attr.DUPLICATE_OF,
    Attr.CONFIG_HASH,
    Attr.WORKER,
    Attr.SLURM_TASK,
    Attr.SEED,
    Attr.CANDIDATE,
    Attr.CONTINUES,
    Attr.GROWTH,
)


class Status(enum.StrEnum):
    """A trial's ``status``: how it ended, in one word (its ``reason`` says why)."""

    # a training run's own ending (stt.train.trainer.RunStatus), recorded as the run reported it
    COMPLETED = RunStatus.COMPLETED.value
    EARLY_STOPPED = RunStatus.EARLY_STOPPED.value
    TIME_BUDGET = RunStatus.TIME_BUDGET.value
    PRUNED = RunStatus.PRUNED.value  # stopped by a pruner that cannot pause (median, hyperband)
    DIVERGED = RunStatus.DIVERGED.value  # PRUNED: the sampler learns to avoid it
    OOM = RunStatus.OOM.value  # PRUNED
    INTERRUPTED = RunStatus.INTERRUPTED.value  # FAIL: Ctrl-C, SIGTERM or the study's time budget; resume continues it
    # the search's own
    PAUSED = "paused"  # PRUNED by ASHA at a rung, its checkpoint kept: a promotion continues it
    OVER_BUDGET = "over_budget"  # PRUNED before training: past --max-params / --max-gflops
    INFEASIBLE = "infeasible"  # PRUNED before training: too much stride for the corpus's letters
    NO_EPOCH = "no_epoch"  # PRUNED: trained, but finished no epoch
    BUILD_ERROR = "build_error"  # FAIL, counted: the sampled config cannot build (a bug in a space or a block)
    ERROR = "error"  # FAIL, counted: training raised, or its process was killed
    DUPLICATE_PROMOTION = "duplicate_promotion"  # FAIL, not counted: another worker promoted the candidate first
    BEYOND_TARGET = "beyond_target"  # FAIL, not counted: the target was met by trials started before it
    ORPHANED = "orphaned"  # FAIL, not counted: its worker died before it trained anything
    DRY_RUN = "dry_run"  # COMPLETE: a load test's trial (``worker --dry-run``), nothing trained


COUNTED_FAILURES = (Status.ERROR, Status.BUILD_ERROR)  # FAIL statuses that count towards the target
STEPPED_ASIDE = (Status.DUPLICATE_PROMOTION, Status.BEYOND_TARGET)  # racers that gave way to another trial
UNTRAINABLE = (Status.OVER_BUDGET, Status.INFEASIBLE)  # candidates that cost nothing: a space of only these spins
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def mark(trial, status: Status, reason: str) -> None:
    """Record how a trial ended (``trial``: an ``optuna.Trial``)."""
    trial.set_user_attr(Attr.STATUS, str(status))
    trial.set_user_attr(Attr.REASON, reason)


def status_of(t: FrozenTrial) -> str | None:
    return t.user_attrs.get(Attr.STATUS)


def candidate_of(t: FrozenTrial) -> int:
    """The candidate a trial trains: the number of its first trial (re-queued copies and promotions keep it)."""
    return t.user_attrs.get(Attr.CANDIDATE, t.number)


def paused(t: FrozenTrial) -> bool:
    """A candidate waiting at an ASHA rung, resumable from its checkpoint."""
    return t.state == TrialState.PRUNED and status_of(t) == Status.PAUSED


def counts(t: FrozenTrial) -> bool:
    """A trial that counts towards the target: complete, pruned, or failed on its own (not a killed worker's).

    The target counts candidates: a trial that continues a paused candidate does not count.
    """
    if Attr.CONTINUES in t.user_attrs:
        return False
    return t.state in FINISHED or (t.state == TrialState.FAIL and status_of(t) in COUNTED_FAILURES)


def in_play(t: FrozenTrial) -> bool:
    """Counted, or on its way to be: running, or waiting to run (enqueued, re-queued); candidates only."""
    return counts(t) or (Attr.CONTINUES not in t.user_attrs and t.state in (TrialState.RUNNING, TrialState.WAITING))


UID = "uid"  # the study user attribute set last by create_study: a study that has it is complete
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a study name is a folder name on every host
_UID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as launch writes it


def check_study_name(name: str) -> str:
    """A study name fit to be a folder (no separators, no ``..``, not too long for a file system); else one line."""
    if not STUDY_NAME.fullmatch(name or ""):
        shown = name if len(name or "") <= 40 else f"{name[:40]}... ({len(name)} characters)"
        raise StudyError(
            f"--study {shown!r}: expected 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def run_key(name: str, uid: str | None) -> str:
    """A study's folder under a runs root: its name and the first 8 hex digits of its uid (older studies: the
    name alone). Both come from the storage, which is not trusted: anything but a plain name and a hex uid is
    refused, so the folder is always one level below the root."""
    # launch allows only STUDY_NAME; a study from before it checked names may be anything that is one folder
    if name in ("", ".", "..") or any(c in name for c in "/\\\0") or len(name.encode()) > 200:
        check_study_name(name)  # raises
    if uid is None:
        return name
    if not isinstance(uid, str) or not _UID.fullmatch(uid):
        raise StudyError(f"study '{name}': its uid {str(uid)[:40]!r} is not one launch writes (32 hex digits)")
    return f"{name}-{uid[:8]}"


def study_key(study) -> str:
    """:func:`run_key` of a stored study (an ``optuna.Study``)."""
    return run_key(study.study_name, study.user_attrs.get(UID))


RUNS_ENV = "STT_RUNS_DIR"  # this host's runs root, when --runs-dir is not given
DEFAULT_RUNS = "results/runs"


def runs_root(given: str | None = None) -> str:
    """This host's runs root: ``--runs-dir``, else ``$STT_RUNS_DIR``, else ``results/runs`` here; absolute.

    Never the storage's: the study records where its launch put its runs, but a worker writes only where its
    own host says.
    """
    return str(Path(given or os.environ.get(RUNS_ENV) or DEFAULT_RUNS).resolve())


def earlier_trial(value, number: int, itself: bool = False) -> bool:
    """Whether a number the storage gave names a trial before trial ``number`` (or ``number`` itself, with
    ``itself``): the one check before a stored trial number is used as an index or in a path."""
    last = number if itself else number - 1
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= last


def trained_by(trials: list[FrozenTrial], t: FrozenTrial) -> FrozenTrial:
    """The trial whose run holds ``t``'s weights: ``t``'s duplicate-of original, else ``t`` itself."""
    dup = t.user_attrs.get(Attr.DUPLICATE_OF)
    return trials[dup] if earlier_trial(dup, t.number) else t


def run_dir_of(runs_root: str | Path, key: str, t: FrozenTrial) -> Path:
    """A trial's run directory: ``RUNS_ROOT/<run_key>/trial_<candidate>``, from this host's runs root.

    Derived, never read from the storage: a storage may be shared or reached through an unauthenticated
    proxy, and nothing it says may make this host train, read or copy outside its own runs root. Every trial
    of a candidate (re-queued copies, promotions) shares its first trial's folder; a duplicate's is the
    original's (``t`` should be that trial).
    """
    candidate = candidate_of(t)
    if not earlier_trial(candidate, t.number, itself=True):
        raise StudyError(f"trial {t.number}: its candidate {str(candidate)[:40]!r} is not a trial before it")
    return Path(runs_root).resolve() / key / f"trial_{candidate}"
