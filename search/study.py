"""Studies: create one, and run it (a worker's loop), which is also how a study is resumed.

One study lives in one Optuna storage (``search.storage``). Everything needed to continue it - the space's
text, the data folder and every option (``search.settings.StudySettings``) - is stored in the study's user
attributes, so ``resume --study NAME`` needs nothing else, and several workers (processes or hosts) run the
same study side by side: each calls :func:`run_study` against the same storage. A dead worker's trial is
re-queued and resumed from its checkpoint (``search.workers``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.fidelity import FidelityPlan
from search.objective import LeftWaiting, Objective
from search.pruners import make_pruner
from search.pruners.asha import AshaPruner, enqueue_promotions
from search.rescore import rescore_top
from search.samplers import default_startup_trials, make_sampler
from search.settings import StudySettings
from search.space import Space, load_seed, space_from_text
from search.stopping import StopRules
from search.storage import DEFAULT_STORAGE, existing_studies, load_study, open_storage, redact
from search.stretch import Stretch
from search.trials import UID, Attr, Status, check_study_name, counts, runs_root, status_of
from search.trials import study_key as run_key  # the study's folder under a runs root
from search.workers import more_to_do, on_stop_signal, pid_alive, process_namespace, requeue_dead_trials, rss_mb
from stt.core.errors import StudyError
from stt.core.signals import STOP_SIGNALS

log = logging.getLogger("search")


def open_corpus(settings: StudySettings, space: Space, device: str | None = None, progress: bool = True):
    """The study's corpus, opened (and prepared, on first use) once by this worker: every file is checked here,
    and its trials reopen the prepared caches alone (``stt.data.training_data.reopen``)."""
    from stt.data.training_data import open_training_data

    return open_training_data(settings.data_dir, space.spec.get("frontend", "fbank"), progress=progress, device=device)


def stride_cap(corpus) -> int:
    """The largest total stride CTC can align on the corpus's training split; a corpus on which nothing aligns
    is one line."""
    from stt.data.batching import FeatureDataset
    from stt.train.feasibility import MAX_INFEASIBLE, max_feasible_stride

    train = corpus.train
    stride = max_feasible_stride(train.frames, FeatureDataset(train, corpus.tokenizer).targets)
    if stride == 0:
        raise StudyError(
            f"data {corpus.data_dir}: even at total stride 1 the {corpus.frontend} features of more than "
            f"{MAX_INFEASIBLE:.0%} of the {train.split} utterances have fewer frames than CTC needs for their "
            "transcripts; no config in any space is feasible (check the transcripts, or use a finer frontend)"
        )
    return stride


def study_space(settings: StudySettings) -> Space:
    return space_from_text(settings.space_text, settings.space_name)


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
    return run_study(name, storage, timeout=timeout, device=device, isolate=isolate, runs_dir=settings.runs_dir)


def create_study(name: str, settings: StudySettings, storage: str | None = None, enqueue: tuple = ()) -> optuna.Study:
    """Check everything (options, space, name, data, seeds) and create the study with its settings; trains nothing.

    Args:
        enqueue: run configs (paths or shipped names) to train first, after the space's own ``seeds``.
    """
    settings.check()
    check_study_name(name)
    space = study_space(settings)
    found = existing_studies(storage)
    if name in found and UID in found[name]:
        raise StudyError(
            f"study '{name}' already exists in {redact(storage or DEFAULT_STORAGE)}; continue it with "
            f"`stt-search resume --study {name}` or choose another --study"
        )
    settings.fidelity(space)  # a space without one full fidelity under a pruner that needs one: refused here
    if settings.pruner != "none" and settings.multi_objective:
        log.info("multi-objective study: pruning is off (Optuna cannot prune multi-objective trials)")
    max_stride = stride_cap(open_corpus(settings, space))  # fails early on bad data
    if settings.rescore_top:
        _rescoring_files(settings)
    # warm start: the space's seed configs, then --enqueue's, as the first trials (each must be a point of
    # the space, so its parameters describe it and the sampler learns from it like from any candidate)
    seeds = [load_seed(src, space, max_stride) for src in [*space.spec.get("seeds", []), *enqueue]]
    # absolute paths: a resume from another folder must find the same data and runs (a host that mounts
    # them elsewhere passes --data/--runs-dir); a uid: a study re-created under an old name never
    # resumes the old study's checkpoints
    settings.data_dir = str(Path(settings.data_dir).resolve())
    settings.runs_dir = runs_root(settings.runs_dir)
    st = open_storage(storage, create=True)  # every check has passed: only now may the database appear
    _clear_abandoned(name, st, storage)
    try:  # atomic in the storage: of two launches of one new name, one creates it and the other lands here
        study = optuna.create_study(study_name=name, storage=st, directions=["minimize"] * len(settings.objectives))
    except optuna.exceptions.DuplicatedStudyError:
        raise StudyError(
            f"study '{name}' was created meanwhile by another launch in {redact(storage or DEFAULT_STORAGE)}; "
            f"join it with `stt-search worker --study {name}` or choose another --study"
        ) from None
    study.set_user_attr(CREATOR, {"worker": f"{socket.gethostname()}:{os.getpid()}", "ns": process_namespace()})
    for k, v in settings.to_attrs().items():
        study.set_user_attr(k, v)
    for params, label in seeds:
        study.enqueue_trial(params, user_attrs={Attr.SEED: label}, skip_if_exists=True)
    study.set_user_attr(UID, uuid.uuid4().hex)  # last: a study with a uid is complete (see run_study)
    return study


CREATOR = "creator"  # the study user attribute naming the launch that creates it (host:pid, pid namespace)
CREATE_GRACE = 30.0  # seconds a half-created study's creator on another host is given before it counts as dead


def _clear_abandoned(name: str, st, url: str | None, grace: float = CREATE_GRACE) -> None:
    """Make way for a new study ``name``: an existing one without a uid was left half-created by a launch.

    While its creator lives (by pid on this host; elsewhere, for ``grace`` seconds) it is being created right
    now: wait for its uid, then the name is taken (one line). A dead creator's study trained nothing and is
    deleted, by its id: a launch that deleted it first and created the name afresh keeps its new study.
    """

    give_up, said = time.time() + grace, False
    while True:
        try:
            sid = st.get_study_id_from_name(name)
            attrs = st.get_study_user_attrs(sid)
        except KeyError:
            return  # no such study (any more)
        if UID in attrs:
            raise StudyError(
                f"study '{name}' already exists in {redact(url or DEFAULT_STORAGE)} (another launch created it "
                f"just now); join it with `stt-search worker --study {name}` or choose another --study"
            )
        creator = attrs.get(CREATOR) if isinstance(attrs.get(CREATOR), dict) else {}
        pid = str(creator.get("worker", "")).rpartition(":")[2]
        local = creator.get("ns") == process_namespace() and pid.isdigit()
        if (local and not pid_alive(int(pid))) or (not local and time.time() > give_up):
            log.info("study '%s' was left half-created by a stopped launch: creating it afresh", name)
            with contextlib.suppress(KeyError):  # another launch deleted it first
                st.delete_study(sid)
            return
        if not said:
            log.info("study '%s' is being created by another launch (%s); waiting for it", name, creator or "?")
            said = True
        time.sleep(0.2)


def _rescoring_files(settings: StudySettings) -> None:
    """Check --lm/--lexicon now (or build the corpus's own), so a bad file fails the launch, not its end."""
    from stt.data.text import LetterTokenizer
    from stt.decode.beam import make_decoder
    from stt.decode.lm import corpus_lm

    if settings.lm is None:
        settings.lm, settings.lexicon = corpus_lm(settings.data_dir)
    else:
        settings.lm = str(Path(settings.lm).resolve())
        settings.lexicon = "auto" if settings.lexicon in (None, "auto") else str(Path(settings.lexicon).resolve())
    make_decoder(LetterTokenizer(), settings.lm, settings.lexicon)


def count_finished(study: optuna.Study) -> int:
    """Trials that count towards the target."""
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


def read_settings(study: optuna.Study) -> StudySettings:
    return StudySettings.from_attrs(study.user_attrs)


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
        timeout: wall seconds for this worker: no trial starts after it, and a running one stops at its next
            epoch end (failed as interrupted: ``resume`` continues it).
        isolate: train each trial in a child process (the default; see search.isolation).
        data_dir: where this worker finds the data, when it is mounted elsewhere than where the study was
            launched (the study's own path otherwise).
        runs_dir: this host's runs root (default: ``search.trials.runs_root``); never the storage's.
        dry_run: a load test: sample and build each candidate, wait this many seconds, train nothing.
    """
    study, st, settings = _open(name, storage)
    settings.data_dir = data_dir or settings.data_dir
    launched_with, settings.runs_dir = settings.runs_dir, runs_root(runs_dir)
    if launched_with != settings.runs_dir:
        log.warning(
            "runs root %s (the study was launched with %s; pass --runs-dir there to continue its checkpoints)",
            settings.runs_dir,
            launched_with,
        )
    deadline = None if timeout is None else time.time() + timeout
    space = study_space(settings)
    corpus = open_corpus(settings, space, device, progress)
    max_stride = stride_cap(corpus)
    plan = settings.fidelity(space, deadline, timeout)  # one plan, for the pruner and the objective alike
    study.sampler = make_sampler(
        settings.sampler, settings.seed, settings.startup_trials or default_startup_trials(settings.trials)
    )
    study.pruner = make_pruner(settings.pruner, plan, settings.trials, settings.seeds_in_full)
    asha = study.pruner if isinstance(study.pruner, AshaPruner) and not settings.multi_objective else None
    _recover(study, settings, asha)
    where = dict(device=device, progress=progress, isolate=isolate, dry_run=dry_run)  # this worker's own
    objective = _objective(study, settings, space, corpus, max_stride, plan, where)
    done = count_finished(study)
    log.info(
        "study '%s' in %s: %d of %d trials finished, max total stride %d",
        name,
        redact(storage or DEFAULT_STORAGE),
        done,
        settings.trials,
        max_stride,
    )
    if done < settings.trials:
        rules = StopRules(name, settings.trials, settings.space_name)
        callbacks = [functools.partial(_log_trial, target=settings.trials)]
        if asha is not None:
            callbacks.append(functools.partial(_promote, asha=asha))
        if plan.stretch_end is not None:
            callbacks.append(Stretch(plan, corpus.feature_size, len(corpus.tokenizer)))
        _optimize(study, objective, callbacks, rules, st, settings, plan)
        if rules.fired:
            raise rules.error()
    _rescore(study, settings, device)  # also what a stopped worker left unrescored
    return study


def _objective(
    study, settings: StudySettings, space: Space, corpus, max_stride: int, plan: FidelityPlan, where: dict
) -> Objective:
    """The study's objective, as this worker runs it (``where``: its device, progress, isolation, dry run)."""
    return Objective(
        space=space,
        corpus=corpus,
        runs_dir=settings.runs_dir,
        run_key=run_key(study),
        target=settings.trials,
        objectives=tuple(settings.objectives),
        max_total_stride=max_stride,
        max_params=settings.max_params,
        max_gflops=settings.max_gflops,
        epochs=settings.epochs,
        trial_seconds=settings.trial_seconds,
        prune_on=settings.prune_on,
        plan=plan,
        **where,
    )


def _open(name: str, storage: str | None) -> tuple[optuna.Study, optuna.storages.BaseStorage, StudySettings]:
    """The stored study, its storage (beating at the study's heartbeat) and its settings."""
    st = open_storage(storage)
    study = load_study(name, storage, st)
    if UID not in study.user_attrs:
        raise StudyError(
            f"study '{name}' was never fully created (its launch was stopped while creating it); "
            "run the same `stt-search launch` again"
        )
    settings = StudySettings.from_attrs(study.user_attrs)
    if settings.heartbeat != 30 and isinstance(st, optuna.storages.RDBStorage):  # every worker beats at its pace
        st = open_storage(storage, heartbeat=settings.heartbeat)
        study = load_study(name, storage, st)
    return study, st, settings


def _recover(study: optuna.Study, settings: StudySettings, asha: AshaPruner | None) -> None:
    """Before asking for trials: re-queue dead workers' trials, and promote what a resumed study had earned."""
    requeued = requeue_dead_trials(study, orphan_after=settings.heartbeat * 4)
    if requeued:
        log.info("re-queued trials %s (their worker died); they resume from their checkpoints", requeued)
    if asha is not None:
        promoted = enqueue_promotions(study, asha)
        if promoted:
            log.info("promoting paused trials %s", promoted)


def _log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, target: int) -> None:
    """One line per finished trial: its state, dev WER, why it stopped, and the study's progress."""
    ua = trial.user_attrs
    status = status_of(trial)
    wer = f" dev WER {100 * ua[Attr.DEV_WER]:.1f}%" if ua.get(Attr.DEV_WER) is not None else ""
    if status == Status.PAUSED:
        state, why = str(Status.PAUSED), f" ({ua.get(Attr.REASON, '')})"
    else:
        state = trial.state.name.lower()
        why = f" ({status}: {ua.get(Attr.REASON, '')})" if trial.state != TrialState.COMPLETE and status else ""
    log.info(
        "trial %d %s%s%s  [%d/%d finished]  worker RSS %.0f MB",
        trial.number,
        state,
        wer,
        why,
        count_finished(study),
        target,
        rss_mb(),
    )


def _promote(study: optuna.Study, trial: optuna.trial.FrozenTrial, asha: AshaPruner) -> None:
    for n in enqueue_promotions(study, asha):
        log.info("trial %d promoted: a new trial continues it from its checkpoint", n)


def _optimize(study, objective, callbacks, rules: StopRules, storage, settings: StudySettings, plan) -> None:
    """Ask for trials until the stop rules stop the study, the deadline passes, or nothing is left to do here.

    Past the search's deadline (``plan.deadline``) only a waiting trial (the stretch) may still start, until the
    study's end (``plan.end``).
    """
    deadline = plan.end
    # a scheduler's SIGTERM or early warning stops like Ctrl-C: checkpoint, leave the trial waiting, exit
    previous = {s: signal.signal(s, on_stop_signal) for s in STOP_SIGNALS if s != signal.SIGINT}
    try:
        while deadline is None or time.time() < deadline:
            searching = plan.deadline is None or time.time() < plan.deadline
            if not searching and not _stretch_waiting(study):
                break  # past the search's deadline only the stretch runs; re-queued trials wait for a resume
            # n_trials counts this process's trials; re-queued WAITING trials are picked up first by optimize()
            try:
                study.optimize(
                    objective,
                    n_trials=settings.trials + 100,
                    callbacks=[*callbacks, rules],
                    timeout=None if deadline is None else deadline - time.time(),
                    catch=(Exception,),
                    show_progress_bar=False,
                )
            except LeftWaiting as e:  # its checkpoint is on disk and the trial waits for the next worker
                raise KeyboardInterrupt(str(e)) from None
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as e:
                # this worker was stopped past its heartbeat and its trial re-queued for another: the copy is
                # the other worker's; this one stopped after its checkpoint and asks for the next trial
                if not _finished_elsewhere(e):
                    raise
                log.warning(
                    "a trial of this worker was taken over by another worker (it was stopped past its "
                    "heartbeat); this worker goes on with the next"
                )
                continue
            if rules.fired:
                break
            if searching and not more_to_do(study, settings.trials, storage, deadline, settings.heartbeat * 4):
                break
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _finished_elsewhere(e: BaseException) -> bool:
    """Whether Optuna refused to write to or tell a trial because another worker had finished it meanwhile."""
    return isinstance(e, optuna.exceptions.UpdateFinishedTrialError) or str(e).startswith("Cannot tell a ")


def _stretch_waiting(study: optuna.Study) -> bool:
    """Whether the stretch (a grown candidate, search.stretch) waits to run."""
    return any(t.state == TrialState.WAITING and Attr.GROWTH in t.user_attrs for t in study.get_trials(deepcopy=False))


def _rescore(study: optuna.Study, settings: StudySettings, device: str | None) -> None:
    if settings.rescore_top:
        rescore_top(
            study, settings.rescore_top, settings.lm, settings.lexicon, settings.data_dir, settings.runs_dir, device
        )
