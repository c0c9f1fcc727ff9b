"""Asynchronous successive halving (ASHA) with pause and promote, over the study's storage.

Fidelity is counted in ``units`` per epoch, and rungs sit at 1, 3, 9, ... of them (``eta**k``, each
at most a third of the full fidelity) and at the full fidelity. Studies count whole epochs (rungs at
1, 3, 9... epochs); with ``--probe`` they count thirds, and the lowest rung is a probe after 1/3 of the
first epoch (the Trainer scores dev part-way and checkpoints there).
A candidate that reaches a rung goes on only while it
ranks in the best ``1/eta`` of the candidates that have reached that rung (at least ``eta`` of
them). Otherwise it *pauses*: its trial ends PRUNED with status ``paused``, keeping its checkpoint.
When later candidates reach the rung and a paused one now ranks in the best ``1/eta``, it is
*promoted*: a new trial with the same parameters continues it from its checkpoint (user
attributes ``candidate``: the number of the candidate's first trial, and ``continues``: the trial
it continues). Every trial of a candidate reports the candidate's whole curve, so the sampler and
the rung comparison see one curve per candidate whichever trial trained which epochs.

Why not Optuna's ``SuccessiveHalvingPruner``: it cannot pause, so the first candidate to reach a
rung always goes on alone, and a one-worker study spends its first quarter of an hour training
that one candidate to full fidelity. Here the first candidates wait at the lowest rung until
enough others arrive to rank them (Li et al., "A System for Massively Parallel Hyperparameter
Tuning", 2020). Candidates compared at a rung have trained the same epochs on the same schedule
(the LR schedule spans the full fidelity), so the comparison is like for like.

A seed (a config the researcher enqueued: the space's ``seeds:`` or ``launch --enqueue``) is never
paused: it trains to full fidelity, and its curve is a reference at every rung for the candidates
that come after it. This is Hyperband's hedge bracket, the one that stops nothing early (Li et al.,
"Hyperband", 2018), given to the config the researcher already trusts. Early rungs favour what learns
fast (a higher LR, a smaller batch, a shallower model) over what ends best: in the main job the shipped
default config ranked 8th of 9 at the probe and was paused there, though trained alone it ends better
than every candidate the study finished (issue 12). With the seed trained in full, a study's best is at
least the seed's own result, and the rest of the budget looks for better.

When the study has all its candidates (its target), the rungs are final: the best paused candidate
of each rung is then promoted even where fewer than ``eta`` reached it, so a study ends with a
candidate trained to full fidelity. With a time budget and no candidate trained in full yet, once
the time left is about what the leading candidate needs to finish at its measured pace, that
candidate is finished first. Near a budget's end, a candidate goes on past a rung (or is promoted)
only if it reaches its next rung in time; otherwise it waits, paused, for a ``resume`` with time.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.trials import in_play

ETA = 3  # a third of the candidates at a rung go on
UNITS = 3  # fidelity is counted in thirds of an epoch: the lowest rung is a probe after 1/3 of epoch 1


def rung_epochs(epochs: int, eta: int = ETA, min_epochs: int = 1) -> list[int]:
    """The rungs for a full fidelity of ``epochs`` (any unit): ``[1, 3, ..., epochs]``, each gap at least ``eta``-fold.

    >>> rung_epochs(12), rung_epochs(20), rung_epochs(30), rung_epochs(2)
    ([1, 3, 12], [1, 3, 20], [1, 3, 9, 30], [2])
    """
    rungs, r = [], min_epochs
    while r * eta <= epochs:
        rungs.append(r)
        r *= eta
    return rungs + [epochs]


def candidate_of(t: FrozenTrial) -> int:
    """The candidate a trial trains: the number of its first trial (re-queued copies and promotions keep it)."""
    return t.user_attrs.get("candidate", t.number)


def rung_values(trials: list[FrozenTrial], epoch: int) -> dict[int, tuple[float, int]]:
    """candidate -> (its value at ``epoch``, trial number) for every candidate that has reached it."""
    out: dict[int, tuple[float, int]] = {}
    for t in trials:
        v = t.intermediate_values.get(epoch)
        if v is not None and v == v:  # NaN (a diverged epoch) ranks nowhere
            out.setdefault(candidate_of(t), (v, t.number))
    return out


def best_at(values: dict[int, tuple[float, int]], final: bool = False, eta: int = ETA) -> list[int]:
    """The candidates that may go on past a rung: the best ``len // eta`` (at least one once ``final``)."""
    quota = len(values) // eta
    if final:
        quota = max(quota, 1 if values else 0)
    return [c for c, _ in sorted(values.items(), key=lambda kv: kv[1])[:quota]]


class AshaPruner(optuna.pruners.BasePruner):
    """Pauses a trial at a rung unless its candidate ranks in the best ``1/eta`` there (minimised signal).

    The objective turns a prune into a pause (status ``paused``, see :func:`promotions`); ``reasons``
    holds, per trial number, the rank that decided it.
    """

    def __init__(
        self,
        epochs: int,
        eta: int = ETA,
        target: int | None = None,
        units: int = UNITS,
        deadline: float | None = None,
        seeds_in_full: bool = True,
    ):
        self.units, self.eta, self.target, self.deadline = units, eta, target, deadline
        self.seeds_in_full = seeds_in_full  # a seed config trains to full fidelity, never paused
        self.rungs = rung_epochs(epochs * units, eta)  # in steps of 1/units epoch: 1/3, 1, 3, 9... epochs
        self.reasons: dict[int, str] = {}
        self.finishing: int | None = None  # the candidate this worker is finishing before the deadline

    def final(self, trials: list[FrozenTrial]) -> bool:
        """Whether every candidate of the target is in: then each rung promotes at least its best."""
        return self.target is not None and sum(1 for t in trials if in_play(t)) >= self.target

    def closing(self, trials: list[FrozenTrial]) -> int | None:
        """The candidate to finish before the deadline, once the time left is about what it needs.

        Only while no candidate has reached full fidelity: the rule makes sure a study ends with one.
        Once one has (a seed, which is never paused), finishing another early leader would spend the end
        of the budget on a fast starter that the rungs cannot tell from a good finisher (in the main job
        such a leader took the last 9 of 20 minutes and ended at 42.5 % dev WER beside the seed's 18.8 %),
        so the time left goes to new candidates and the rungs' own promotions.

        The leader is the best candidate at the highest rung below full fidelity (from epoch 1 on) that at
        least ``eta`` candidates have reached, so it is picked from a ranking, not from the first arrival:
        finishing a candidate takes most of a short budget, and nothing else trains meanwhile on one worker.
        A leader that cannot finish in the time left (with a 1.1x margin for a pace that slows) gives way
        to the next best. When the time left is at most 1.5x what the leader needs at its measured pace,
        it goes on to full fidelity, past every rung, whatever its rank; the time after it goes to new
        candidates. Without a deadline: None.
        """
        if self.deadline is None:
            return None
        if self.finishing is not None:  # decided once, then kept to the end
            return self.finishing
        top, final = self.rungs[-1], self.final(trials)
        done = {candidate_of(t) for t in trials if (t.last_step or 0) >= top}
        if done:  # the study already has a candidate trained in full (a seed): the time left goes to ASHA
            return None
        left = self.deadline - time.time()
        # from a whole epoch on: a probe's pace is mostly start-up and its dev pass
        for r in [r for r in reversed(self.rungs[:-1]) if r >= self.units]:
            values = {c: v for c, v in rung_values(trials, r).items() if c not in done}
            if len(values) < self.eta and not final:
                continue  # too few there to rank: look lower, where more have arrived
            for lead in sorted(values, key=values.get):
                # the pace of the candidate's furthest trial (its wall time counts from the candidate's start)
                mine = [t for t in trials if candidate_of(t) == lead and t.user_attrs.get("wall_seconds")]
                if not mine:
                    continue
                latest = max(mine, key=lambda t: t.last_step or 0)
                need = (top - r) * latest.user_attrs["wall_seconds"] / max(latest.last_step or 1, 1)
                if 1.1 * need > left:
                    continue  # cannot finish in time: the next best may
                if left <= 1.5 * need:
                    self.finishing = lead
                return self.finishing
        return None

    def next_rung(self, step: int) -> int:
        """The rung after ``step`` (``step`` below full fidelity)."""
        return next(r for r in self.rungs if r > step)

    def in_time(self, step: int, elapsed: float | None) -> bool:
        """Whether a candidate at ``step`` that took ``elapsed`` seconds so far reaches its next rung by the deadline.

        A promotion past the budget trains epochs that this run cannot score: the candidate would be cut
        before its next rung, ranked nowhere, while the same minutes probe several new candidates. It
        pauses instead, and a later ``resume`` (with time) promotes it.
        """
        if self.deadline is None or not elapsed or step >= self.rungs[-1]:
            return True
        return time.time() + (self.next_rung(step) - step) * elapsed / step <= self.deadline

    def at(self, step: int) -> str:
        """A rung in words: "after 1/3 of epoch 1", "at epoch 3"."""
        if step % self.units:
            return f"after {step}/{self.units} of epoch {step // self.units + 1}"
        return f"at epoch {step // self.units}"

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs[:-1]:
            return False
        if self.seeds_in_full and trial.user_attrs.get("seed"):
            return False  # the hedge: the researcher's own config is not judged on its first epochs
        trials = study.get_trials(deepcopy=False)
        values = rung_values(trials, step)
        me = candidate_of(trial)
        go_on = best_at(values, self.final(trials), self.eta)
        if me == self.closing(trials):
            return False
        rank = 1 + sorted(values, key=values.get).index(me) if me in values else len(values)
        if me in go_on:
            elapsed = trial.user_attrs.get("elapsed")
            if self.in_time(step, elapsed):
                return False
            nxt, per_epoch = self.next_rung(step), elapsed * self.units / step
            self.reasons[trial.number] = (
                f"rank {rank} of {len(values)} {self.at(step)} goes on, but at its pace ({per_epoch:.0f} s per "
                f"epoch) it would not be {self.at(nxt)} before the study's budget ends; a resume promotes it"
            )
            return True
        self.reasons[trial.number] = (
            f"rank {rank} of {len(values)} {self.at(step)}, where the best {len(go_on)} go on; "
            f"promoted if it rises into the best 1/{self.eta}"
        )
        return True


def paused(t: FrozenTrial) -> bool:
    return t.state == TrialState.PRUNED and t.user_attrs.get("status") == "paused"


def promotions(
    trials: list[FrozenTrial],
    rungs: list[int],
    final: bool = False,
    eta: int = ETA,
    closing: int | None = None,
    in_time=None,
) -> list[FrozenTrial]:
    """Paused trials whose candidate now ranks in the best ``1/eta`` of its rung (or is ``closing``).

    Highest rung first. ``in_time(step, elapsed)``: whether a candidate would reach its next rung before
    the study's deadline (:meth:`AshaPruner.in_time`); one that would not stays paused.

    A candidate is promoted once per rung: a trial that already continues it (waiting, running,
    finished, or failed and re-queued) rules it out.
    """
    continued = {t.user_attrs.get("continues") for t in trials if t.user_attrs.get("status") != "duplicate_promotion"}
    latest: dict[int, FrozenTrial] = {}
    for t in trials:
        latest[candidate_of(t)] = t  # trials come in number order: the candidate's latest
    out = []
    for r in reversed(rungs[:-1]):
        for c in best_at(rung_values(trials, r), final, eta) + ([closing] if closing is not None else []):
            t = latest[c]
            if paused(t) and t.last_step == r and t.number not in continued and t not in out:
                if c != closing and in_time is not None and not in_time(r, t.user_attrs.get("wall_seconds")):
                    continue
                out.append(t)
    return out


def enqueue_promotions(study: optuna.Study, pruner: AshaPruner) -> list[int]:
    """Queue a continuing trial for each promotable paused candidate; returns the trials continued."""
    done = []
    trials = study.get_trials(deepcopy=False)
    for t in promotions(trials, pruner.rungs, pruner.final(trials), pruner.eta, pruner.closing(trials), pruner.in_time):
        attrs = {"candidate": candidate_of(t), "continues": t.number, "run_dir": t.user_attrs.get("run_dir")}
        if t.user_attrs.get("seed"):
            attrs["seed"] = t.user_attrs["seed"]
        study.enqueue_trial(t.params, user_attrs=attrs)
        done.append(t.number)
    return done
