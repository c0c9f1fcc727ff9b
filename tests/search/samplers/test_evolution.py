"""Regularised evolution: a child is its tournament winner with one decision changed; winners are ranked by the
fidelity they reached, then their value there; old candidates age out."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search.samplers.evolution import PARENT, EvolutionSampler
from search.trials import Attr

DISTS = {"a": IntDistribution(0, 9), "b": IntDistribution(0, 9), "c": CategoricalDistribution(["x", "y", "z"])}


def add(study, params, curve, state=TrialState.PRUNED, **user_attrs):
    value = min(curve.values()) if state == TrialState.COMPLETE else None
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            params=params,
            distributions={k: DISTS[k] for k in params},
            intermediate_values=curve,
            user_attrs=user_attrs,
        )
    )
    return study.trials[-1].number


def child(study, curve=None) -> tuple[int | None, dict]:
    """Ask for a candidate; ``curve``: the dev signal it reports ({step: value}), none by default."""
    trial = study.ask()
    params = {k: trial.suggest_int(k, 0, 9) for k in ("a", "b")}
    params["c"] = trial.suggest_categorical("c", ["x", "y", "z"])
    if params["a"] >= 5:  # define-by-run: a question only some candidates ask
        params["d"] = trial.suggest_int("d", 0, 9)
    for step, value in (curve or {}).items():
        trial.report(value, step)
    study.tell(trial, state=TrialState.PRUNED)
    return study.trials[-1].user_attrs.get(PARENT), params


@pytest.fixture
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=EvolutionSampler(population_size=4, sample_size=4, n_startup=2, seed=0))


def test_a_child_is_the_best_candidate_with_one_decision_changed(study):
    add(study, {"a": 1, "b": 1, "c": "x"}, {1: 3.0})
    best = add(study, {"a": 2, "b": 7, "c": "y"}, {1: 1.0})
    add(study, {"a": 3, "b": 3, "c": "z"}, {1: 2.0})
    changed = set()
    for _ in range(30):
        parent, params = child(study)
        assert parent == best
        diff = {k for k in ("a", "b", "c") if params[k] != {"a": 2, "b": 7, "c": "y"}[k]}
        assert len(diff) == 1, params  # a mutation changes one thing, always something
        changed |= diff
        if params["a"] >= 5:
            assert 0 <= params["d"] <= 9  # a question the parent never asked: drawn at random
    assert changed == {"a", "b", "c"}  # any decision may be the one


def test_the_winner_is_the_candidate_that_got_furthest_then_the_lowest_signal_there(study):
    far = add(study, {"a": 1, "b": 1, "c": "x"}, {1: 3.0, 3: 2.5})  # promoted to the second rung
    add(study, {"a": 2, "b": 2, "c": "y"}, {1: 0.5})  # the best at the probe, paused there
    assert child(study)[0] == far
    promoted = add(study, {"a": 4, "b": 4, "c": "z"}, {1: 0.9})
    # the candidate's promotion continues it in a trial of its own: the curves pool under the candidate
    add(study, {"a": 4, "b": 4, "c": "z"}, {3: 2.4, 9: 1.9}, **{Attr.CANDIDATE: promoted, Attr.CONTINUES: promoted})
    assert child(study)[0] == promoted


def test_old_candidates_age_out_however_good(study):
    old = add(study, {"a": 1, "b": 1, "c": "x"}, {5: 0.1}, state=TrialState.COMPLETE)
    for i in range(3):
        add(study, {"a": 2 + i, "b": 2, "c": "y"}, {1: 2.0 + i})
    assert child(study)[0] == old  # four candidates: the old one is still in the population of four
    for _ in range(4):  # its children join the population, however bad, and push it out
        child(study, {1: 9.0})
    assert old not in {child(study, {1: 9.0})[0] for _ in range(10)}


def test_before_the_population_is_large_enough_candidates_are_random(study):
    add(study, {"a": 1, "b": 1, "c": "x"}, {1: 3.0})
    assert child(study)[0] is None  # one candidate, two needed: no tournament yet
    add(study, {"a": 2, "b": 2, "c": "x"}, {}, state=TrialState.PRUNED)  # untrained (over budget): no signal
    assert child(study)[0] is None


def test_bad_sizes_are_refused_when_built():
    with pytest.raises(ValueError, match=r"need 1 <= sample_size \(5\) <= population_size \(4\)"):
        EvolutionSampler(population_size=4, sample_size=5)
    with pytest.raises(ValueError, match="n_startup must be at least 1"):
        EvolutionSampler(n_startup=0)
