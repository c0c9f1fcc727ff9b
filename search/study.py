"""Studies: storage, launch, resume.

One study lives in one Optuna storage (SQLite by default, PostgreSQL for many
hosts). Everything needed to continue it — the space file's text, the data
folder, sampler, pruner, target trial count, budgets — is stored in the
study's user attributes, so ``resume --study NAME`` needs nothing else and
several workers (processes or hosts) can run the same study side by side:
each calls ``run_study`` against the same storage.

Dead workers: RDB storages get Optuna's heartbeat (a RUNNING trial whose
worker stops beating is failed after a grace period and re-queued by
``RetryHeartbeatStaleTrialCallback``). On ``resume`` this host does not wait
for the grace period: a RUNNING trial whose worker was a process on this host
that no longer exists is failed and re-queued at once. A re-queued trial keeps
its parameters and user attributes, hence its run directory, and the
objective resumes it from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from search.asha import UNITS, AshaPruner, enqueue_promotions
from search.objective import Objective
from search.space import Space, load_seed, load_space, max_feasible_stride, validate_space
from search.storage import DEFAULT_STORAGE, StorageError, open_storage, redact, stable_enough
from search.trials import COUNTED_FAILURES, counts, in_play, pid_alive, process_namespace
from stt.errors import StudyError

log = logging.getLogger("search")
STUCK_AFTER = 20  # consecutive untrainable candidates (over budget, infeasible) after which a study gives up
FAILED_AFTER = 5  # consecutive candidates that failed (at build or in training) after which a study gives up


class PerTrialSeeding(optuna.samplers.BaseSampler):
    """A sampler whose random streams are re-seeded from (study seed, trial number) before every trial.

    Every worker builds its sampler from the study's seed. Seeded once per process, workers would all
    draw the same stream and train the same candidates side by side, and a resumed study would repeat
    trial 0. Trial numbers are unique across workers (the storage hands them out), so each trial gets a
    stream of its own, and a seeded study run one trial at a time is reproducible.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, seed: int):
        self.base, self.seed = base, seed

    def __str__(self) -> str:
        return f"{type(self.base).__name__}(seeded per trial from {self.seed})"

    def before_trial(self, study, trial) -> None:
        seed = int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0])
        _seed_streams(self.base, seed)
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def _seed_streams(sampler, seed: int) -> None:
    """Seed every numpy stream a sampler (and the samplers inside it) draws from."""
    from optuna.samplers._lazy_random_state import LazyRandomState

    for value in vars(sampler).values():
        if isinstance(value, LazyRandomState):
            value.rng.seed(seed)
        elif isinstance(value, optuna.samplers.BaseSampler):
            _seed_streams(value, seed)


def make_sampler(name: str, seed: int | None, n_startup: int):
    """The study's sampler; with a seed, re-seeded per trial (:class:`PerTrialSeeding`)."""
    base = _base_sampler(name, seed, n_startup)
    return base if seed is None else PerTrialSeeding(base, seed)


def _base_sampler(name: str, seed: int | None, n_startup: int):
    if name == "tpe":
        # multivariate + group: the space is conditional (branches exist only for some layer counts);
        # constant_liar: parallel workers do not all sample next to the same running trial
        with stable_enough():
            return optuna.samplers.TPESampler(
                multivariate=True, group=True, seed=seed, n_startup_trials=n_startup, constant_liar=True
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, n_startup))
    raise StudyError(f"--sampler {name!r}: valid: tpe, random, nsga2")


def default_startup_trials(trials: int) -> int:
    """Random trials before TPE models the space: a third of the target, 3 to 10."""
    return min(10, max(3, trials // 3))


PRUNERS = ("asha", "median", "hyperband", "none")
SIGNALS = ("loss", "cer", "wer")  # what a trial reports per epoch for the pruner (dev CTC loss per letter, CER, WER)


def make_pruner(name: str, epochs: int, target: int | None = None, probe: bool = True, seeds_in_full: bool = True):
    if name == "asha":
        # asynchronous successive halving in epochs, with pause and promote (search/asha.py): rungs at 1, 3,
        # ... epochs; a candidate goes on past a rung only in the best third of those that reached it,
        # and otherwise waits there, resumable, until it is promoted or the study ends. With a probe the
        # lowest rung is after 1/3 of epoch 1 (fidelity in thirds of an epoch)
        return AshaPruner(epochs, target=target, units=UNITS if probe else 1, seeds_in_full=seeds_in_full)
    if name == "median":
        # CTC models sit at ~100% WER (all blank) for their first epochs whatever their worth, so
        # a comparison there is noise: no pruning in the first third of the schedule (steps are epochs from 1,
        # and Optuna's earliest pruning step is n_warmup_steps itself)
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=epochs // 3 + 1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(2, epochs), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"--pruner {name!r}: valid: {', '.join(PRUNERS)}")


@dataclass
class StudySettings:
    """What a study needs to run, stored as the study's user attributes."""

    space_text: str
    space_name: str
    data_dir: str
    trials: int
    sampler: str = "tpe"
    pruner: str = "asha"
    prune_on: str = (
        "loss"  # the dev signal the pruner compares at each epoch: loss, cer or wer (see bench/early_signals.py)
    )
    seed: int | None = None
    objectives: tuple = ("wer",)
    max_params: float | None = None
    max_gflops: float | None = None
    epochs: int | None = None
    trial_seconds: float | None = None
    runs_dir: str = "results/runs"
    startup_trials: int | None = None  # random trials before TPE; None: default_startup_trials(trials)
    heartbeat: int = 30  # seconds between a running trial's beats; a worker silent for 4 beats is presumed dead
    # ASHA: a first rung after 1/3 of epoch 1 (fidelity in thirds of an epoch). Cheap, but deep in the LR
    # warm-up it ranks candidates by their peak LR and batch more than by their architecture: with a
    # 20-epoch schedule it paused the default config 8th of 9 there, though it ranks first at epoch 1
    probe: bool = True
    # ASHA: a seed config (the space's seeds, --enqueue) trains to full fidelity, never paused at a rung
    # (search/asha.py): a study's best is then at least the researcher's own config's result
    seeds_in_full: bool = True
    rescore_top: int = 0  # beam-decode the K best finished trials (search/rescore.py); ranking stays greedy dev WER
    lm: str | None = None  # the rescoring LM (ARPA/KenLM binary); None: a unigram LM of the training transcripts
    lexicon: str | None = None  # the rescoring lexicon file, or "auto" (the LM's words)

    def to_attrs(self) -> dict:
        d = dict(self.__dict__)
        d["objectives"] = list(self.objectives)
        return d

    @classmethod
    def from_attrs(cls, attrs: dict) -> StudySettings:
        d = {k: attrs[k] for k in cls.__dataclass_fields__ if k in attrs}
        d["objectives"] = tuple(d.get("objectives", ("wer",)))
        d.setdefault("probe", True)  # a study made before the setting counted its steps in thirds of an epoch
        d.setdefault("seeds_in_full", False)  # and paused its seeds like any candidate
        return cls(**d)


def _directions(objectives) -> list[str]:
    valid = ("wer", "params", "gflops")
    for o in objectives:
        if o not in valid:
            raise StudyError(f"--objectives: {o!r} is not one of {', '.join(valid)}")
    if objectives[0] != "wer":
        raise StudyError("--objectives: the first objective must be wer")
    return ["minimize"] * len(objectives)


def _feasibility(data_dir: str, frontend: str) -> tuple[int, int]:
    """(max total stride, feature size) for the corpus's training split, preparing features if needed."""
    from stt.batching import FeatureDataset
    from stt.corpus import find_splits, resolve_split
    from stt.features import open_split

    split = resolve_split(find_splits(data_dir), "train")
    cache = open_split(data_dir, split, frontend)
    targets = FeatureDataset(cache).targets
    stride = max_feasible_stride(cache.frames, targets)
    if stride == 0:
        raise StudyError(
            f"data {data_dir}: even at total stride 1 the {frontend} features of more than 2% of the "
            f"{split} utterances have fewer frames than CTC needs for their transcripts; no config "
            f"in any space is feasible (check the transcripts, or use a finer frontend)"
        )
    return stride, cache.feature_size


def existing_studies(storage: str | None) -> dict[str, dict]:
    """The studies in a storage, name -> user attributes; none (nothing created) when its file does not exist yet."""
    try:
        st = open_storage(storage)
    except StorageError as e:
        if "no such file" in str(e):
            return {}
        raise
    return {s.study_name: s.user_attrs for s in optuna.get_all_study_summaries(st, include_best_trial=False)}


def launch(
    name: str,
    settings: StudySettings,
    storage: str | None = None,
    timeout: float | None = None,
    device: str | None = None,
    isolate: bool = True,
    enqueue: tuple = (),
) -> optuna.Study:
    """Create a study (an existing name is an error: use resume) and run it to its target."""
    create_study(name, settings, storage, enqueue)
    return run_study(name, storage, timeout=timeout, device=device, isolate=isolate)


def create_study(name: str, settings: StudySettings, storage: str | None = None, enqueue: tuple = ()) -> optuna.Study:
    """Check everything (space, names, data, seeds) and create the study with its settings; trains nothing.

    Args:
        enqueue: run configs (paths or shipped names) to train first, after the space's own ``seeds``.
    """
    space = load_space_text(settings)
    found = existing_studies(storage)
    if name in found and "uid" in found[name]:
        raise StudyError(
            f"study '{name}' already exists in {redact(storage or DEFAULT_STORAGE)}; continue it with "
            f"`stt-search resume --study {name}` or choose another --study"
        )
    for flag, value in (
        ("--trials", settings.trials),
        ("--epochs", settings.epochs),
        ("--trial-seconds", settings.trial_seconds),
        ("--heartbeat", settings.heartbeat),
        ("--max-params", settings.max_params),
        ("--max-gflops", settings.max_gflops),
        ("--startup-trials", settings.startup_trials),
    ):
        if value is not None and not value > (-1 if flag == "--startup-trials" else 0):
            raise StudyError(f"{flag} {value}: expected a number {'>= 0' if flag == '--startup-trials' else '> 0'}")
    _directions(settings.objectives)
    if settings.pruner != "none" and len(settings.objectives) > 1:
        log.info("multi-objective study: pruning is off (Optuna cannot prune multi-objective trials)")
    make_sampler(settings.sampler, settings.seed, 1)  # validate names before creating anything
    make_pruner(settings.pruner, 1)
    if settings.prune_on not in SIGNALS:
        raise StudyError(f"--prune-on {settings.prune_on!r}: valid: {', '.join(SIGNALS)}")
    max_stride, _ = _feasibility(settings.data_dir, space.spec.get("frontend", "fbank"))  # fails early on bad data
    if settings.rescore_top:
        _rescoring_files(settings)
    # warm start: the space's seed configs, then --enqueue's, as the first trials (each must be a point of
    # the space, so its parameters describe it and the sampler learns from it like from any candidate)
    seeds = [load_seed(src, space, max_stride) for src in space.spec.get("seeds", [])]
    seeds += [load_seed(src, space, max_stride) for src in enqueue]
    # absolute paths: a resume from another folder must find the same data and runs (a host that mounts
    # them elsewhere passes --data/--runs-dir); a uid: a study re-created under an old name never
    # resumes the old study's checkpoints
    settings.data_dir = str(Path(settings.data_dir).resolve())
    settings.runs_dir = str(Path(settings.runs_dir).resolve())
    st = open_storage(storage, create=True)  # every check has passed: only now may the database appear
    if name in found:  # no uid: a launch killed while it created the study; nothing ran in it
        log.info("study '%s' was left half-created by a stopped launch: creating it afresh", name)
        optuna.delete_study(study_name=name, storage=st)
    study = optuna.create_study(study_name=name, storage=st, directions=_directions(settings.objectives))
    for k, v in settings.to_attrs().items():
        study.set_user_attr(k, v)
    for params, label in seeds:
        study.enqueue_trial(params, user_attrs={"seed": label}, skip_if_exists=True)
    study.set_user_attr("uid", uuid.uuid4().hex)  # last: a study with a uid is complete (see run_study)
    return study


def _rescoring_files(settings: StudySettings) -> None:
    """Check --lm/--lexicon now (or build the corpus's own), so a bad file fails the launch, not its end."""
    from search.rescore import default_lm
    from stt.decoding import make_decoder
    from stt.text import LetterTokenizer

    if settings.lm is None:
        if settings.lexicon is not None:
            raise StudyError("--lexicon needs --lm (without --lm, the corpus's own lexicon and unigram LM are used)")
        settings.lm, settings.lexicon = default_lm(settings.data_dir)
    else:
        settings.lm = str(Path(settings.lm).resolve())
        settings.lexicon = "auto" if settings.lexicon in (None, "auto") else str(Path(settings.lexicon).resolve())
    make_decoder(LetterTokenizer(), settings.lm, settings.lexicon)


def load_space_text(settings: StudySettings) -> Space:
    import yaml

    return Space(
        validate_space(yaml.safe_load(settings.space_text), settings.space_name),
        settings.space_name,
        settings.space_text,
    )


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
        if (
            t.state == TrialState.RUNNING
            and "worker" not in t.user_attrs
            and t.datetime_start is not None
            and (now - t.datetime_start).total_seconds() > orphan_after
        ):
            with contextlib.suppress(ValueError, RuntimeError):  # finished meanwhile: another resumer
                optuna.Trial(study, t._trial_id).set_user_attr("status", "orphaned")
                study.tell(t.number, state=TrialState.FAIL)
            continue
        pid = t.user_attrs.get("worker", "").rpartition(":")[2]
        dead = (
            t.state == TrialState.RUNNING
            and t.user_attrs.get("worker_ns") == here
            and pid.isdigit()
            and not pid_alive(int(pid))
        )
        interrupted = (
            t.state == TrialState.FAIL and t.user_attrs.get("status") == "interrupted" and t.number not in retried
        )
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


def count_finished(study: optuna.Study) -> int:
    """Trials that count towards the target."""
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


def rss_mb() -> float:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def run_key(study: optuna.Study) -> str:
    """The study's folder under the runs root: its name and uid (older studies: the name alone)."""
    uid = study.user_attrs.get("uid")
    return f"{study.study_name}-{uid[:8]}" if uid else study.study_name


def run_study(
    name: str,
    storage: str | None = None,
    timeout: float | None = None,
    progress: bool = True,
    device: str | None = None,
    isolate: bool = True,
    data_dir: str | None = None,
    runs_dir: str | None = None,
    dry_run: float | None = None,
) -> optuna.Study:
    """Run (or continue) a stored study until it has its target number of finished trials.

    Args:
        isolate: train each trial in a child process (the default; see search.isolation).
        data_dir, runs_dir: where this worker finds the data and the runs root, when they are mounted
            elsewhere than where the study was launched (the study's own paths otherwise).
    """
    st = open_storage(storage)
    try:
        study = optuna.load_study(study_name=name, storage=st)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False))
        raise StudyError(
            f"no study '{name}' in {redact(storage or DEFAULT_STORAGE)} (studies there: {', '.join(names) or 'none'})"
        ) from None
    if "uid" not in study.user_attrs:
        raise StudyError(
            f"study '{name}' was never fully created (its launch was stopped while creating it); "
            "run the same `stt-search launch` again"
        )
    settings = StudySettings.from_attrs(study.user_attrs)
    settings.data_dir = data_dir or settings.data_dir
    settings.runs_dir = runs_dir or settings.runs_dir
    # every worker beats at the study's pace
    if settings.heartbeat != 30 and isinstance(st, optuna.storages.RDBStorage):
        st = open_storage(storage, heartbeat=settings.heartbeat)
        study = optuna.load_study(study_name=name, storage=st)
    space = load_space_text(settings)
    frontend = space.spec.get("frontend", "fbank")
    max_stride, feature_size = _feasibility(settings.data_dir, frontend)
    epochs = settings.epochs or space.spec.get("train", {}).get("epochs", 12)
    study.sampler = make_sampler(
        settings.sampler, settings.seed, settings.startup_trials or default_startup_trials(settings.trials)
    )
    study.pruner = make_pruner(
        settings.pruner,
        epochs if not isinstance(epochs, (list, dict)) else 12,
        settings.trials,
        settings.probe,
        settings.seeds_in_full,
    )
    requeued = requeue_dead_trials(study, orphan_after=settings.heartbeat * 4)
    if requeued:
        log.info("re-queued trials %s (their worker died); they resume from their checkpoints", requeued)
    asha = study.pruner if isinstance(study.pruner, AshaPruner) and len(settings.objectives) == 1 else None
    if asha is not None:
        promoted = enqueue_promotions(study, asha)  # a resumed study first continues what it had promoted
        if promoted:
            log.info("promoting paused trials %s", promoted)
    objective = Objective(
        space=space,
        data_dir=settings.data_dir,
        runs_dir=settings.runs_dir,
        run_key=run_key(study),
        target=settings.trials,
        isolate=isolate,
        dry_run=dry_run,
        objectives=tuple(settings.objectives),
        max_total_stride=max_stride,
        max_params=settings.max_params,
        max_gflops=settings.max_gflops,
        epochs=settings.epochs,
        trial_seconds=settings.trial_seconds,
        feature_size=feature_size,
        device=device,
        progress=progress,
        prune_on=settings.prune_on,
    )
    remaining = settings.trials - count_finished(study)
    log.info(
        "study '%s' in %s: %d of %d trials finished, max total stride %d",
        name,
        redact(storage or DEFAULT_STORAGE),
        count_finished(study),
        settings.trials,
        max_stride,
    )
    if remaining <= 0:
        _rescore(study, settings, device)  # what a stopped worker left unrescored
        return study

    stuck: list[str] = []
    failing: list[str] = []

    def after_trial(study, trial):
        """Log the trial; stop at the target, or when candidates keep failing. One read of the trial list."""
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if counts(t)]
        ua = trial.user_attrs
        wer = f" dev WER {100 * ua['dev_wer']:.1f}%" if ua.get("dev_wer") is not None else ""
        why = (
            f" ({ua.get('status')}: {ua.get('reason', '')})"
            if trial.state != TrialState.COMPLETE and ua.get("status")
            else ""
        )
        if ua.get("status") == "paused":
            why = f" ({ua.get('reason', '')})"
        state = "paused" if ua.get("status") == "paused" else trial.state.name.lower()
        log.info(
            "trial %d %s%s%s  [%d/%d finished]  worker RSS %.0f MB",
            trial.number,
            state,
            wer,
            why,
            len(done),
            settings.trials,
            rss_mb(),
        )
        if asha is not None:
            for n in enqueue_promotions(study, asha):
                log.info("trial %d promoted: a new trial continues it from its checkpoint", n)
        # running trials count too: when they finish the target is met, so asking for another would overshoot it
        if sum(1 for t in trials if in_play(t)) >= settings.trials:
            study.stop()
        # over-budget/infeasible candidates cost nothing, so a space that yields only those would spin to its target
        tail = done[-STUCK_AFTER:]
        if len(tail) == STUCK_AFTER and all(t.user_attrs.get("status") in ("over_budget", "infeasible") for t in tail):
            stuck.append(tail[-1].user_attrs.get("reason", ""))
            study.stop()
        tail = done[-FAILED_AFTER:]
        if len(tail) == FAILED_AFTER and all(t.user_attrs.get("status") in COUNTED_FAILURES for t in tail):
            failing.append(tail[-1].user_attrs.get("reason", ""))  # a bug or a broken file: stop, don't burn the target
            study.stop()

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's SIGTERM stops like Ctrl-C: checkpoint, mark, exit
    deadline = None if timeout is None else time.time() + timeout
    objective.deadline = deadline  # a trial still running then stops at its next epoch end; resume continues it
    if asha is not None:
        asha.deadline = deadline  # near it, the rungs are final: the leading candidate is trained to the end
    try:
        while deadline is None or time.time() < deadline:
            # n_trials counts this process's trials; re-queued WAITING trials are picked up first by optimize()
            study.optimize(
                objective,
                n_trials=settings.trials + 100,
                callbacks=[after_trial],
                timeout=None if deadline is None else deadline - time.time(),
                catch=(Exception,),
                show_progress_bar=False,
            )
            if failing or stuck or not _more_to_do(study, settings.trials, st, deadline, settings.heartbeat * 4):
                break
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not (failing or stuck):
        _rescore(study, settings, device)
    if failing:
        raise StudyError(
            f"study '{name}': the last {FAILED_AFTER} candidates failed (last: {failing[0]}); "
            f"see the trials' 'reason' with `stt-search compare {name}`"
        )
    if stuck:
        raise StudyError(
            f"study '{name}': the last {STUCK_AFTER} candidates from {settings.space_name} could not be "
            f"trained (last: {stuck[0]}); loosen --max-params/--max-gflops or narrow the space"
        )
    return study


def _rescore(study: optuna.Study, settings: StudySettings, device: str | None) -> None:
    if settings.rescore_top:
        from search.rescore import rescore_top

        rescore_top(
            study, settings.rescore_top, settings.lm, settings.lexicon, settings.data_dir, settings.runs_dir, device
        )


def _more_to_do(study: optuna.Study, target: int, storage, deadline: float | None, orphan_after: float = 120.0) -> bool:
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def read_settings(study: optuna.Study) -> StudySettings:
    return StudySettings.from_attrs(study.user_attrs)


def settings_from_space(space_path: str, data_dir: str, trials: int, **kw) -> StudySettings:
    space = load_space(space_path)
    return StudySettings(space_text=space.text, space_name=space.name, data_dir=str(data_dir), trials=trials, **kw)
