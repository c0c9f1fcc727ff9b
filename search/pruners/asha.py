"""Asynchronous successive halving (ASHA) with pause and promote, over the study's storage.

Fidelity is counted in ``units`` per epoch (1, or 3 with a probe after 1/3 of epoch 1); rungs sit at 1, 3,
9, ... units (``eta**k``, each at most a third of the full fidelity) and at the full fidelity. The rules:

* A candidate goes on past a rung only while it ranks in the best ``1/eta`` of the candidates that reached
  it (at least ``eta`` of them). Otherwise it *pauses*: PRUNED with status ``paused``, checkpoint kept.
* A paused candidate that later ranks in the best ``1/eta`` of its rung is *promoted*: a new trial with its
  parameters continues its run directory (``candidate``, ``continues``). Every trial of a candidate reports
  the candidate's whole curve, so rungs compare one curve per candidate.
* A seed config (``seeds:``, ``launch --enqueue``) is never paused: Hyperband's bracket that stops nothing
  early, given to the config the researcher trusts, so a study's best is at least the seed's own result.
* Once the target's candidates are all in, the rungs are final: each rung's best goes on.
* With a deadline: while no candidate is trained in full, the leading one is finished once the time left is
  about what it needs (:meth:`AshaPruner.closing`); near the end, a candidate goes on or is promoted only if it
  reaches its next rung in time (:meth:`AshaPruner.in_time`).

Optuna's ``SuccessiveHalvingPruner`` cannot pause: the first candidate to reach a rung always goes on
alone. Why each rule, and what was measured: ``docs/search.md``.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import FrozenTrial

from search.fidelity import ETA, FidelityPlan
from search.trials import Attr, Status, candidate_of, in_play, mark, paused


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

    The rank that decided a pause is written on the trial as its ``reason``; the objective then records the
    trial as ``paused`` (see :func:`promotions`).

    Args:
        plan: the study's fidelity plan: full fidelity, steps per epoch, rungs, deadline.
        target: the study's target of candidates (the rungs are final once all are in).
        seeds_in_full: a seed config trains to full fidelity, never paused.
    """

    def __init__(self, plan: FidelityPlan, target: int | None = None, seeds_in_full: bool = True):
        self.plan, self.target, self.seeds_in_full = plan, target, seeds_in_full
        self.units, self.eta, self.deadline, self.rungs = plan.units, plan.eta, plan.deadline, plan.rungs
        self.finishing: int | None = None  # the candidate this worker is finishing before the deadline

    def final(self, trials: list[FrozenTrial]) -> bool:
        """Whether every candidate of the target is in: then each rung promotes at least its best."""
        return self.target is not None and sum(1 for t in trials if in_play(t)) >= self.target

    def closing(self, trials: list[FrozenTrial]) -> int | None:
        """The candidate to finish before the deadline, once the time left is about what it needs; else None.

        Only while no candidate has reached full fidelity (a seed has, unless ``--pause-seeds``): the rule makes
        sure a study ends with one, and once one has, the time left goes to new candidates. The leader is the best
        candidate at the highest rung from epoch 1 on that at least ``eta`` candidates have reached; one that
        cannot finish in the time left (at its measured pace, with a 1.1x margin) gives way to the next. When
        the time left is at most 1.5x what the leader needs, it trains on to full fidelity, past every rung.
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
                mine = [t for t in trials if candidate_of(t) == lead and t.user_attrs.get(Attr.WALL_SECONDS)]
                if not mine:
                    continue
                latest = max(mine, key=lambda t: t.last_step or 0)
                need = (top - r) * latest.user_attrs[Attr.WALL_SECONDS] / max(latest.last_step or 1, 1)
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

        Epochs past the budget would be cut before the next rung and ranked nowhere: such a candidate pauses
        instead, and a later ``resume`` (with time) promotes it.
        """
        if self.deadline is None or not elapsed or step >= self.rungs[-1]:
            return True
        return time.time() + (self.next_rung(step) - step) * elapsed / step <= self.deadline

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs[:-1]:
            return False
        if self.seeds_in_full and trial.user_attrs.get(Attr.SEED):
            return False  # the hedge: the researcher's own config is not judged on its first epochs
        trials = study.get_trials(deepcopy=False)
        values = rung_values(trials, step)
        me = candidate_of(trial)
        go_on = best_at(values, self.final(trials), self.eta)
        if me == self.closing(trials):
            return False
        rank = 1 + sorted(values, key=values.get).index(me) if me in values else len(values)
        if me in go_on:
            elapsed = trial.user_attrs.get(Attr.ELAPSED)
            if self.in_time(step, elapsed):
                return False
            nxt, per_epoch = self.next_rung(step), elapsed * self.units / step
            why = (
                f"rank {rank} of {len(values)} {self.plan.at(step)} goes on, but at its pace ({per_epoch:.0f} s per "
                f"epoch) it would not be {self.plan.at(nxt)} before the study's budget ends; a resume promotes it"
            )
        else:
            why = (
                f"rank {rank} of {len(values)} {self.plan.at(step)}, where the best {len(go_on)} go on; "
                f"promoted if it rises into the best 1/{self.eta}"
            )
        mark(optuna.Trial(study, trial._trial_id), Status.PAUSED, why)  # on the trial itself: any worker reads it
        return True


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
    continued = {
        t.user_attrs.get(Attr.CONTINUES) for t in trials if t.user_attrs.get(Attr.STATUS) != Status.DUPLICATE_PROMOTION
    }
    latest: dict[int, FrozenTrial] = {}
    for t in trials:
        latest[candidate_of(t)] = t  # trials come in number order: the candidate's latest
    out = []
    for r in reversed(rungs[:-1]):
        for c in best_at(rung_values(trials, r), final, eta) + ([closing] if closing is not None else []):
            t = latest[c]
            if paused(t) and t.last_step == r and t.number not in continued and t not in out:
                if c != closing and in_time is not None and not in_time(r, t.user_attrs.get(Attr.WALL_SECONDS)):
                    continue
                out.append(t)
    return out


def enqueue_promotions(study: optuna.Study, pruner: AshaPruner) -> list[int]:
    """Queue a continuing trial for each promotable paused candidate; returns the trials continued."""
    done = []
    trials = study.get_trials(deepcopy=False)
    for t in promotions(trials, pruner.rungs, pruner.final(trials), pruner.eta, pruner.closing(trials), pruner.in_time):
        attrs = {
            Attr.CANDIDATE: candidate_of(t),
            Attr.CONTINUES: t.number,
        }
        if t.user_attrs.get(Attr.SEED):
            attrs[Attr.SEED] = t.user_attrs[Attr.SEED]
        study.enqueue_trial(t.params, user_attrs=attrs)
        done.append(t.number)
    return done
