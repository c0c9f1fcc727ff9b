"""The objective: one trial's life, from a sampled config to a recorded result, in named stages.

``admit`` (name the worker; step aside when another trial already does this one's work), ``sample`` (a run
config from the space), ``measure`` (against the study's budgets), ``dedupe`` (reuse the result of an
identical config already scored), ``workspace`` (the run directory, resuming a checkpoint made for the same
config), ``train`` (a :class:`search.isolation.TrainJob`, reporting a dev signal per step of the study's
fidelity plan to the pruner) and ``record`` (what happened, in the words of ``search.trials``).

A trial that cannot or should not train (over budget, infeasible, diverged, out of memory, a duplicate of
a pruned one) ends PRUNED: it counts towards the study's target and the sampler learns to avoid it. A trial
whose process died stays RUNNING until ``resume`` (or a heartbeat) fails it and re-queues a copy that
continues from the same run directory. Each epoch the trial reports one dev signal (``prune_on``): WER is the
objective, but it sits near 100 % while a CTC model still emits mostly blanks, so rungs rank by one that moves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from search.fidelity import FidelityPlan
from search.isolation import ChildBusy, ChildDied, ChildFailed, ChildInfeasible, TrainJob, train_in_child
from search.pruners.asha import AshaPruner
from search.space import Space, sample_config
from search.trials import (
    METRICS,
    Attr,
    Status,
    candidate_of,
    earlier_trial,
    in_play,
    mark,
    run_dir_of,
    status_of,
    trained_by,
)
from search.workers import claim, received_stop
from stt.core.errors import StudyError
from stt.core.files import make_dir, write_text
from stt.core.signals import stop_signals_held
from stt.data.training_data import TrainingData
from stt.model.measure import measure
from stt.train.feasibility import InfeasibleError
from stt.train.run import RunDirBusy, run_dir_holder
from stt.train.run_config import RunConfig, TrainConfig, load_run_config
from stt.train.trainer import RunStatus

log = logging.getLogger("search")
_MEASURED = (Attr.PARAMS, Attr.GFLOPS)  # a property of the config: measured by each trial, never copied


def _resumable(run_dir: Path, config_hash: str) -> bool:
    """A checkpoint to continue from, written for this very config (not another study's trial of the same number)."""
    if not (run_dir / "last.pt").exists():
        return False
    try:
        return json.loads((run_dir / "trial.json").read_text())["config_hash"] == config_hash
    except (OSError, ValueError, KeyError):
        return False


def config_hash(run: RunConfig, growth: dict | None = None) -> str:
    """Identity of a normalised run config: architecture and training settings, what decides the result (and,
    for a grown candidate, what it grew from)."""
    what = run.to_dict() if growth is None else {"run": run.to_dict(), "growth": growth}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


class OutOfTime(RuntimeError):
    """The study's time budget ended this trial between two epochs; it fails as interrupted and resumes later."""


class CandidateFailed(RuntimeError):
    """A candidate that failed before training (status and reason are on the trial); counts towards the target."""


class LeftWaiting(BaseException):
    """This worker was told to stop (Ctrl-C, SIGTERM, a scheduler's early warning) and its trial, checkpointed,
    is WAITING again for any worker: the next one to ask continues it from its checkpoint, in the same trial.

    A BaseException that is not a KeyboardInterrupt, so Optuna's loop neither catches it nor marks the trial
    failed: a stopped worker is not a failed candidate, and must not count towards a failure streak.
    """


class TakenOver(RuntimeError):
    """This worker's trial was failed and re-queued while the worker was stopped (its heartbeat went stale).

    The copy is another worker's now: this one stopped training after its checkpoint and writes nothing more
    to the trial (the storage refuses writes to a finished trial); ``search.study`` moves on to the next.
    """


@dataclass
class Objective:
    space: Space
    corpus: TrainingData  # the prepared corpus, opened once by this worker (its trials reopen it cheaply)
    runs_dir: str  # this worker's runs root: a trial trains in RUNS_DIR/<run_key>/trial_<candidate>
    run_key: str = ""  # the study's folder under the root: its name and the first 8 hex digits of its uid
    plan: FidelityPlan = field(default_factory=lambda: FidelityPlan(TrainConfig().epochs))  # steps, rungs, deadline
    objectives: tuple = ("wer",)  # "wer" and optionally "params" / "gflops"
    max_total_stride: int = 4
    max_params: float | None = None
    max_gflops: float | None = None
    epochs: int | None = None  # override the space's train.epochs
    trial_seconds: float | None = None  # per-trial wall budget
    device: str | None = None
    target: int | None = None  # the study's target: a trial started beyond it (workers racing) is not trained
    isolate: bool = True  # train each trial in a child process (memory and CUDA state return after every trial)
    dry_run: float | None = None  # load tests: sample, build on meta, sleep this long, score by the config hash
    prune_on: str = "loss"  # the dev signal a trial reports per epoch for the pruner: "loss", "cer" or "wer"
    progress: bool = False

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def _values(self, attrs: dict):
        by_name = {"wer": attrs.get(Attr.DEV_WER), "params": attrs.get(Attr.PARAMS), "gflops": attrs.get(Attr.GFLOPS)}
        out = [by_name[o] for o in self.objectives]
        return out if self.multi else out[0]

    # -- a trial's life, stage by stage ---------------------------------------------------
    def __call__(self, trial: optuna.Trial):
        try:
            return self._life(trial)
        except optuna.exceptions.UpdateFinishedTrialError as e:  # failed and re-queued while this worker was stopped
            raise TakenOver(f"trial {trial.number} was taken over by another worker") from e
        except (optuna.TrialPruned, OutOfTime, CandidateFailed, TakenOver):
            raise
        except KeyboardInterrupt:
            _leave_waiting(trial)  # raises LeftWaiting
        except Exception as e:
            # a failure no stage foresaw (a folder that cannot be made, a value that cannot be used): it counts,
            # like a failure in training, so that a study that fails every candidate stops after FAILED_AFTER of
            # them instead of spinning through failed trials that never count. A storage's own fault (a server
            # restarting under a write) is not the candidate's: that trial fails uncounted and another replaces it
            if status_of(trial) in (None, Status.INTERRUPTED) and not _storage_fault(e):
                with contextlib.suppress(Exception):  # the storage may be what failed
                    mark(trial, Status.ERROR, f"{type(e).__name__}: {e}"[:500])
            raise

    def _life(self, trial: optuna.Trial):
        if not self._admit(trial):
            return [float("nan")] * len(self.objectives) if self.multi else float("nan")  # FAIL, not counted
        run, h = self._sample(trial)
        self._measure(trial, run)
        if self.dry_run is not None:  # the storage's side of a trial without its training
            time.sleep(self.dry_run)
            trial.set_user_attr(Attr.STATUS, str(Status.DRY_RUN))
            trial.set_user_attr(Attr.DEV_WER, int(h[:8], 16) / 16**8)
            return self._values(trial.user_attrs)
        dup = None if Attr.GROWTH in trial.user_attrs else self._dedupe(trial, h)
        if dup is not None:
            return self._values(dup.user_attrs)
        reporter = _EpochReporter(trial, self, run.train.epochs)
        while True:
            run_dir, resume = self._workspace(trial, h)
            try:
                res = self._train(trial, run, run_dir, resume, reporter)
            except (ChildBusy, RunDirBusy):  # taken between our look and the child's lock: wait again
                continue
            break
        if reporter.taken_over:
            raise TakenOver(f"trial {trial.number} was taken over by another worker; it stopped after its checkpoint")
        trial.set_user_attr(Attr.RESUMED, resume)
        return self._record(trial, res, reporter)

    def _admit(self, trial) -> bool:
        """Name this worker on the trial; False when another trial already does this one's work (a race)."""
        claim(trial)  # first: a resumer judges a RUNNING trial by its worker (see search.workers)
        trial.set_user_attr(Attr.CANDIDATE, candidate_of(trial))  # kept by re-queued copies and promotions
        if self._promoted_twice(trial):
            why = f"trial {trial.user_attrs[Attr.CONTINUES]} is already continued by another trial"
            mark(trial, Status.DUPLICATE_PROMOTION, why)
            return False
        if self._beyond_target(trial):
            # the later-numbered trial steps aside, so the target is met exactly; the study's stop rules then
            # stop this worker
            mark(trial, Status.BEYOND_TARGET, f"{self.target} trials were already running or finished")
            return False
        return True

    def _sample(self, trial) -> tuple[RunConfig, str]:
        growth = trial.user_attrs.get(Attr.GROWTH)
        if growth is not None:
            return self._grown(trial, growth)
        try:
            run = sample_config(trial, self.space, self.max_total_stride)
        except ValueError as e:  # SpaceError/LayerConfigError: the space sampled something that cannot build
            self._stop(trial, Status.BUILD_ERROR, f"{type(e).__name__}: {e}"[:500], failed=True)
        if self.epochs:
            run.train.epochs = self.epochs
        h = config_hash(run)
        trial.set_user_attr(Attr.CONFIG, json.dumps(run.to_dict()))
        trial.set_user_attr(Attr.CONFIG_HASH, h)
        return run, h

    def _grown(self, trial, growth: dict) -> tuple[RunConfig, str]:
        """A candidate grown from a trained one: its parent's config grown by the morphisms, trained on from the
        parent's weights for ``growth["epochs"]`` on a cosine schedule from ``growth["lr"]``.

        The trial's stored config is what ``stt train`` would train from scratch for the same result: the grown
        architecture with the parent's recipe, for the parent's epochs and the child's together.
        """
        from stt.model.morph import from_dict, grown

        parent = self._parent(trial, growth, trial.study.get_trials(deepcopy=False))
        try:
            base = load_run_config(json.loads(parent.user_attrs[Attr.CONFIG]))
            layers = grown(base.layers, [from_dict(m) for m in growth["morphs"]])
        except (KeyError, ValueError) as e:  # a parent without a config, a morphism that does not apply
            self._stop(trial, Status.BUILD_ERROR, f"growth of trial {growth['parent']}: {e}"[:500], failed=True)
        recipe = dict(epochs=growth["epochs"], lr=growth["lr"], schedule="cosine", warmup=growth.get("warmup", 0.1))
        run = dataclasses.replace(base, layers=layers, train=dataclasses.replace(base.train, **recipe))
        scratch = dataclasses.replace(
            run, train=dataclasses.replace(base.train, epochs=base.train.epochs + run.train.epochs)
        )
        h = config_hash(run, growth)
        trial.set_user_attr(Attr.CONFIG, json.dumps(scratch.to_dict()))
        trial.set_user_attr(Attr.CONFIG_HASH, h)
        return run, h

    def _measure(self, trial, run: RunConfig) -> None:
        """Measure the candidate (on ``meta``: no weights) and prune it when it is past a budget."""
        corpus = self.corpus
        try:
            size = measure(run, corpus.feature_size, len(corpus.tokenizer), round(corpus.frames_per_second))
        except Exception as e:
            self._stop(trial, Status.BUILD_ERROR, f"{type(e).__name__}: {e}"[:500], failed=True)
        trial.set_user_attr(Attr.PARAMS, size.params)
        trial.set_user_attr(Attr.GFLOPS, size.gflops_per_second)
        over = []
        if self.max_params:
            trial.set_constraint("params", size.params - self.max_params)
            if size.params > self.max_params:
                over.append(f"{size.params:,} parameters > --max-params {self.max_params:,.0f}")
        if self.max_gflops:
            trial.set_constraint("gflops", size.gflops_per_second - self.max_gflops)
            if size.gflops_per_second > self.max_gflops:
                over.append(f"{size.gflops_per_second:.3f} GFLOPs/s > --max-gflops {self.max_gflops}")
        if over:
            self._stop(trial, Status.OVER_BUDGET, "; ".join(over))

    def _dedupe(self, trial, h: str) -> optuna.trial.FrozenTrial | None:
        """An identical config another candidate already trained: its result is copied, not trained again."""
        dup = self._find_duplicate(trial, h)
        if dup is None:
            return None
        trial.set_user_attr(Attr.DUPLICATE_OF, dup.number)
        for k in METRICS:
            if k in dup.user_attrs and k not in _MEASURED:
                trial.set_user_attr(k, dup.user_attrs[k])
        if dup.state == optuna.trial.TrialState.PRUNED:
            raise optuna.TrialPruned(f"duplicate of pruned trial {dup.number}")
        return dup

    def _workspace(self, trial, h: str) -> tuple[str, bool]:
        """The trial's run directory, made and labelled, and whether it holds a checkpoint to resume.

        The folder is derived from this worker's runs root, the study and the candidate (``run_dir_of``): a
        re-queued trial or a promotion finds its candidate's folder and resumes there. The ``run_dir``
        attribute only labels it, relative to the root, for people.
        """
        try:
            run_dir = run_dir_of(self.runs_dir, self.run_key, trial)
        except StudyError as e:  # a storage from elsewhere
            self._stop(trial, Status.ERROR, str(e), True)
        trial.set_user_attr(Attr.RUN_DIR, str(run_dir.relative_to(Path(self.runs_dir).resolve())))
        self._wait_free(trial, run_dir)  # before judging the checkpoint: its holder may still write one
        resume = _resumable(run_dir, h)
        if resume and not self.multi:
            self._report_history(trial, run_dir)
        make_dir(run_dir)
        label = {"study": trial.study.study_name, "trial": trial.number, "config_hash": h}
        write_text(run_dir / "trial.json", json.dumps(label))
        return str(run_dir), resume

    def _wait_free(self, trial, run_dir: Path) -> None:
        """Wait while another process trains in the candidate's run directory.

        That is a worker that stopped (SIGSTOP, a suspended VM, a network partition) past its heartbeat, whose
        trial was re-queued as this one: it is still the folder's rightful writer until it wakes, sees its
        trial taken over and stops after its next checkpoint. Failing this trial instead would count a failure
        and lose the candidate. Past the study's deadline the trial is left to ``resume``, as any trial then.
        """
        holder, delay = run_dir_holder(run_dir), 0.2
        if holder is None:
            return
        log.info("trial %d: %s is in use by %s; waiting for it to let go", trial.number, run_dir, holder)
        while holder is not None:
            if not still_ours(trial):  # this worker was the one stopped, and its trial went to another meanwhile
                raise TakenOver(f"trial {trial.number} was taken over by another worker while it waited")
            if self.plan.deadline is not None and time.time() > self.plan.deadline:
                reason = f"the study's time budget ran out while {run_dir} was in use by {holder}"
                mark(trial, Status.INTERRUPTED, reason)
                raise OutOfTime(reason)
            time.sleep(delay)
            delay = min(2 * delay, 5.0)
            holder = run_dir_holder(run_dir)
        log.info("trial %d: %s is free", trial.number, run_dir)

    def _train(self, trial, run: RunConfig, run_dir: str, resume: bool, reporter: _EpochReporter) -> dict:
        """Train (or resume) the candidate; its TrainResult as a dict. A failure is recorded on the trial first."""
        growth = trial.user_attrs.get(Attr.GROWTH)
        job = TrainJob(
            run=run.to_dict(),
            data=self.corpus.where(),
            run_dir=run_dir,
            device=self.device,
            max_seconds=self.trial_seconds,
            resume=resume,
            progress=self.progress,
            probe=0.0 if self.multi or growth else self.plan.probe,
            trial=trial.number,
            grow_from=self._parent_run(trial, growth) if growth else None,
        )
        try:
            if self.isolate:
                return train_in_child(job, reporter, reporter.start)
            return job.train(reporter, data=self.corpus, on_start=reporter.start)
        except (InfeasibleError, ChildInfeasible) as e:
            self._stop(trial, Status.INFEASIBLE, str(e))
        except (ChildBusy, RunDirBusy):
            raise
        except optuna.TrialPruned:
            raise
        except Exception as e:  # a bug, a broken file, a killed child: fail with the reason; the study goes on
            if reporter.taken_over:  # the exception came from writing to a trial no longer ours
                raise TakenOver(f"trial {trial.number} was taken over by another worker") from e
            why = str(e) if isinstance(e, (ChildFailed, ChildDied)) else f"{type(e).__name__}: {e}"
            mark(trial, Status.ERROR, why[:500])
            raise

    def _record(self, trial, res: dict, reporter: _EpochReporter):
        """What the run reported, on the trial; how it ended decides the trial's state, status and reason."""
        if res.get("dev_wer") is None and reporter.probed:  # stopped at the probe: its dev scores are all there is
            p = reporter.probed
            res.update(dev_wer=p["dev_wer"], dev_cer=p["dev_cer"], epochs=round(p["probe"], 2))
        for k in METRICS:
            if k in res and k not in (Attr.STATUS, Attr.REASON, Attr.RUN_DIR):  # run_dir stays relative to the root
                trial.set_user_attr(k, res[k])
        history = {k: [h.get(k) for h in res["history"]] for k in ("dev_loss", "dev_cer", "dev_wer")}
        trial.set_user_attr(Attr.HISTORY, history)
        status, reason = RunStatus(res["status"]), res["reason"]
        if reporter.out_of_time is not None and reporter.growth and res["dev_wer"] is not None:
            # the stretch ran into the study's end: its best epoch so far is the study's model at the deadline
            status, reason = RunStatus.TIME_BUDGET, f"the study's end came after epoch {reporter.out_of_time}"
        elif reporter.out_of_time is not None:
            where = f"epoch {reporter.out_of_time}" if reporter.out_of_time else "the probe in epoch 1"
            reason = f"the study's time budget ran out after {where}"
            mark(trial, Status.INTERRUPTED, reason)  # like Ctrl-C: `resume` continues it from its checkpoint
            raise OutOfTime(reason)
        if status in (RunStatus.DIVERGED, RunStatus.OOM):
            self._stop(trial, Status(status), reason)
        if status == RunStatus.PRUNED:
            if isinstance(trial.study.pruner, AshaPruner):  # paused at its rung, the pruner's reason on the trial
                stored = trial.study.get_trials(deepcopy=False)[trial.number]  # as stored: a number is an index
                reason = stored.user_attrs.get(Attr.REASON) or reason
                mark(trial, Status.PAUSED, reason)  # a later promotion continues it from last.pt
            else:
                mark(trial, Status.PRUNED, reason)
            raise optuna.TrialPruned(reason)
        if res["dev_wer"] is None:
            self._stop(trial, Status.NO_EPOCH, "no epoch finished")
        mark(trial, Status(status), reason)
        return self._values(trial.user_attrs)

    def _parent(self, trial, growth, trials: list) -> optuna.trial.FrozenTrial:
        """A grown candidate's parent trial; the storage's ``growth`` is checked before it is used."""
        p = growth.get("parent") if isinstance(growth, dict) else None
        if not earlier_trial(p, trial.number):
            self._stop(trial, Status.ERROR, f"its growth's parent {str(p)[:40]!r} is not a trial before it", True)
        return trials[p]  # a trial's number is its index

    def _parent_run(self, trial, growth: dict) -> dict:
        """Where a grown candidate's parent trained (inside the runs root), and how to grow its weights."""
        trials = trial.study.get_trials(deepcopy=False)
        try:
            run_dir = run_dir_of(self.runs_dir, self.run_key, trained_by(trials, self._parent(trial, growth, trials)))
        except StudyError as e:
            self._stop(trial, Status.ERROR, str(e), True)
        return {"run_dir": str(run_dir), "morphs": growth["morphs"]}

    def _stop(self, trial, status: Status, reason: str, failed: bool = False):
        """End a candidate without (more) training: PRUNED (the sampler avoids it), or FAIL for a build error."""
        mark(trial, status, reason)
        if failed:
            raise CandidateFailed(f"{status}: {reason}")
        raise optuna.TrialPruned(f"{status}: {reason}")

    def _report_history(self, trial, run_dir: Path) -> None:
        """Report what a resumed run already has, so this trial holds its candidate's whole curve.

        The earlier trials of the candidate (a paused one, a killed one) hold what they reported, the
        probe included; the run directory's metrics.jsonl holds every finished epoch.
        """
        values = {}
        me = candidate_of(trial)
        for t in trial.study.get_trials(deepcopy=False):
            if t.number != trial.number and candidate_of(t) == me:
                values.update(t.intermediate_values)
        try:
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            history = [json.loads(line) for line in lines if line.strip()]
        except (OSError, ValueError):
            history = []  # the rung comparison then reads the earlier trials' values; training is unaffected
        for h in history:
            value = h.get(f"dev_{self.prune_on}")
            if isinstance(value, (int, float)) and isinstance(h.get("epoch"), int):
                values[self.plan.step(h["epoch"])] = value
        have = trial.study._storage.get_trial(trial._trial_id).intermediate_values  # a trial left waiting has some
        for step in sorted(values.keys() - have.keys()):
            trial.report(values[step], step)

    @staticmethod
    def _promoted_twice(trial) -> bool:
        src = trial.user_attrs.get(Attr.CONTINUES)
        if src is None:
            return False
        return any(
            t.user_attrs.get(Attr.CONTINUES) == src
            and t.number < trial.number
            and t.user_attrs.get(Attr.STATUS) not in (Status.DUPLICATE_PROMOTION, Status.BEYOND_TARGET)
            and t.state != optuna.trial.TrialState.FAIL
            for t in trial.study.get_trials(deepcopy=False)
        )

    def _beyond_target(self, trial) -> bool:
        if Attr.CONTINUES in trial.user_attrs:  # a promotion continues a counted candidate: never beyond the target
            return False
        if not self.target:
            return False
        ahead = sum(1 for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number and in_play(t))
        return ahead >= self.target

    @staticmethod
    def _find_duplicate(trial, h: str):
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        me = candidate_of(trial)
        for t in trial.study.get_trials(deepcopy=False, states=done):
            if t.user_attrs.get(Attr.CONFIG_HASH) == h and t.number != trial.number and candidate_of(t) != me:
                return t
        return None


def _leave_waiting(trial: optuna.Trial) -> None:
    """Put a stopped worker's trial back to WAITING, saying which signal stopped it; raises :class:`LeftWaiting`.

    Its checkpoint is on disk already (the training process wrote it before it exited). Should the storage be
    out of reach, the trial stays RUNNING under this worker's name, and is re-queued as any dead worker's.
    """
    signum = received_stop()
    what = signal.Signals(signum).name if signum else "SIGINT"
    reason = f"{what}: its worker stopped after a checkpoint; the next worker continues it"
    with stop_signals_held(), contextlib.suppress(Exception):
        mark(trial, Status.INTERRUPTED, reason)
        # no worker: a resumer must not judge the waiting trial, once picked up again, by this one's pid
        trial.set_user_attr(Attr.WORKER, "")
        trial.study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.WAITING)
        log.info("trial %d: %s", trial.number, reason)
    raise LeftWaiting(f"trial {trial.number} left waiting ({what})")


def _storage_fault(e: BaseException) -> bool:
    """Whether an exception came from the storage (Optuna's wrapper, or the database driver under SQLAlchemy)."""
    import sqlalchemy.exc

    return isinstance(e, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError))


def still_ours(trial: optuna.Trial) -> bool:
    """Whether a trial this worker runs is still RUNNING in the storage: a worker that was stopped past its
    heartbeat (SIGSTOP, a suspended VM, a partition) finds it failed, and a copy re-queued for another worker."""
    stored = trial.study.get_trials(deepcopy=False)[trial.number]  # a trial's number is its index
    return stored.state == optuna.trial.TrialState.RUNNING


class _EpochReporter:
    """The trainer's ``on_epoch``: reports each epoch's dev signal to the pruner and asks whether to go on.

    Past the search's deadline a trial stops at its next epoch end (``out_of_time``: the epoch), unless that
    epoch was its last; the stretch (a grown candidate) runs to the study's end, with a quarter of its time as
    grace, and reports nothing (its epochs follow its parent's). Multi-objective studies report nothing
    (Optuna cannot prune them).
    """

    def __init__(self, trial, objective: Objective, epochs: int):
        self.trial, self.objective, self.epochs = trial, objective, epochs
        self.growth = Attr.GROWTH in trial.user_attrs  # trained on to the study's end, not judged at rungs
        self.probed: dict = {}  # the probe's metrics, once it ran
        self.out_of_time: int | None = None  # the epoch after which the study's deadline stopped it
        self.taken_over = False  # the trial was failed and re-queued while this worker was stopped

    def start(self) -> str | None:
        """Asked by the training process once it holds the run directory, before it writes there."""
        if not still_ours(self.trial):
            self.taken_over = True
            return "stop"
        return None

    def __call__(self, epoch: int, metrics: dict) -> str | None:
        if self.taken_over or not still_ours(self.trial):
            self.taken_over = True
            return "prune"  # stop after this epoch's checkpoint, which the trial's copy continues from
        try:
            return self._judge(epoch, metrics)
        except optuna.exceptions.UpdateFinishedTrialError:  # taken over between our look and this write
            self.taken_over = True
            return "prune"

    def _judge(self, epoch: int, metrics: dict) -> str | None:
        plan = self.objective.plan
        # the stretch was planned to end by the study's end: it is stopped only a quarter of its time past it
        deadline = plan.end + (plan.end - plan.deadline) / 4 if self.growth and plan.end else plan.deadline
        if deadline is not None and time.time() > deadline and epoch < self.epochs:
            self.out_of_time = epoch
            return "prune"  # stops after this epoch's checkpoint: a resume continues from it
        if self.objective.multi or self.growth:  # a grown candidate's epochs are not comparable at the rungs
            return None
        trial = self.trial
        # the candidate's wall time so far, all its trials: the pruner reads its pace from it (AshaPruner.in_time)
        trial.set_user_attr(Attr.ELAPSED, metrics["elapsed"])
        value = metrics[f"dev_{self.objective.prune_on}"]
        if metrics.get("probe"):
            self.probed.update(metrics)
            trial.report(value, 1)  # the probe is the plan's first step
        else:
            trial.report(value, self.objective.plan.step(epoch))
        return "prune" if trial.should_prune() else None
