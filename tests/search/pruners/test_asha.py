"""The rung scheduler's rules on hand-made trials: rungs, who goes on, who waits, who is promoted."""

import time

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.fidelity import FidelityPlan, rung_epochs
from search.pruners.asha import AshaPruner, best_at, promotions, rung_values
from search.results.compare import trials_frame
from search.settings import settings_from_space
from search.study import launch
from tests.search.conftest import SPACE


def asha(deadline: float | None = None, target: int | None = None, seeds_in_full: bool = True) -> AshaPruner:
    """ASHA over 10 epochs counted in thirds (a probe rung after 1/3 of epoch 1), as studies run it."""
    return AshaPruner(FidelityPlan(10, units=3, deadline=deadline), target=target, seeds_in_full=seeds_in_full)


def _trial(number, curve, state=TrialState.PRUNED, status="paused", **attrs):
    t = create_trial(
        state=state,
        value=curve[max(curve)] if state == TrialState.COMPLETE else None,
        intermediate_values=curve,
        user_attrs={"status": status, **attrs},
    )
    t.number = number
    return t


@pytest.mark.parametrize(
    "epochs,rungs",
    [(1, [1]), (2, [2]), (3, [1, 3]), (10, [1, 3, 10]), (20, [1, 3, 20]), (27, [1, 3, 9, 27]), (30, [1, 3, 9, 30])],
)
def test_rungs_are_eta_fold_apart_and_end_at_the_full_fidelity(epochs, rungs):
    assert rung_epochs(epochs) == rungs


def test_the_probe_rung_can_be_turned_off_and_older_studies_keep_theirs():
    from search.pruners import make_pruner
    from search.settings import StudySettings, settings_from_space
    from search.space import load_space

    small = load_space("small")  # 20 epochs
    plan = settings_from_space("small", "d", 3).fidelity(small)
    assert make_pruner("asha", plan).rungs == [1, 3, 9, 60]  # thirds: 1/3, 1, 3, 20 epochs
    no_probe = settings_from_space("small", "d", 3, probe=False).fidelity(small)
    assert make_pruner("asha", no_probe).rungs == [1, 3, 20] and no_probe.at(1) == "at epoch 1"
    assert settings_from_space("small", "d", 3, pruner="median").fidelity(small).units == 1  # only ASHA probes
    base = {"space_text": "", "space_name": "s", "data_dir": "d", "trials": 3}
    assert StudySettings(**base).probe is True
    assert StudySettings.from_attrs(base).probe is True  # stored before the setting: its steps are in thirds
    assert StudySettings.from_attrs({**base, "probe": False}).probe is False
    # seeds train in full by default; a study stored before that setting paused them like any candidate
    assert make_pruner("asha", plan).seeds_in_full and not make_pruner("asha", plan, seeds_in_full=False).seeds_in_full
    assert StudySettings(**base).seeds_in_full is True
    assert StudySettings.from_attrs(base).seeds_in_full is False


def test_the_best_third_of_a_rung_goes_on_and_no_one_goes_on_alone_until_the_rungs_are_final():
    assert best_at({0: (1.0, 0)}) == [] and best_at({0: (1.0, 0), 1: (0.5, 1)}) == []
    assert best_at({0: (1.0, 0)}, final=True) == [0]  # the study has all its candidates: the rung's best goes on
    values = {c: (v, c) for c, v in enumerate([0.9, 0.3, 0.7, 0.2, 0.8, 0.5, 0.6])}
    assert best_at(values) == [3, 1]  # 7 // 3 = 2: the two lowest
    assert best_at({0: (0.5, 0), 1: (0.5, 1), 2: (0.9, 2)}) == [0]  # a tie goes to the earlier trial


def test_a_paused_candidate_is_promoted_once_it_ranks_in_the_best_third_and_only_once():
    rungs = [1, 3, 10]
    trials = [_trial(0, {1: 2.0}), _trial(1, {1: 1.0}), _trial(2, {1: 3.0})]
    assert [t.number for t in promotions(trials, rungs)] == [1]  # 3 candidates at epoch 1: the best of them
    cont = _trial(3, {1: 1.0, 2: 0.8, 3: 0.6}, candidate=1, continues=1)  # trial 3 continued candidate 1 to epoch 3
    assert promotions(trials + [cont], rungs) == []  # promoted once: not again
    assert rung_values(trials + [cont], 1)[1] == (1.0, 1)  # one value per candidate, whichever trial holds it
    # epoch 3 has one candidate: it waits there, unless the study has all its candidates
    assert promotions(trials + [cont], rungs) == [] and [
        t.number for t in promotions(trials + [cont], rungs, final=True)
    ] == [3]
    # a failed continuation (killed, re-queued) still rules out a second promotion;
    # a duplicate that stepped aside does not
    dup = _trial(4, {}, state=TrialState.FAIL, status="duplicate_promotion", continues=1)
    assert [t.number for t in promotions(trials + [dup], rungs)] == [1]


def test_the_pruner_pauses_at_a_rung_unless_the_candidate_is_in_the_best_third_there():
    study = optuna.create_study()
    pruner = asha()
    assert pruner.rungs == [1, 3, 9, 30]  # in thirds of an epoch: a probe, then 1, 3 and 10 epochs
    at = pruner.plan.at
    assert (at(1), at(3), at(30)) == ("after 1/3 of epoch 1", "at epoch 1", "at epoch 10")
    for curve in ({1: 2.0}, {1: 1.0}, {1: 3.0}, {1: 4.0}, {1: 5.0}):
        study.add_trial(
            create_trial(state=TrialState.PRUNED, intermediate_values=curve, user_attrs={"status": "paused"})
        )

    def decide(value, step=1):
        trial = study.ask()
        for s in range(1, step):
            trial.report(9.9, s)
        trial.report(value, step)
        out = pruner.prune(study, study._storage.get_trial(trial._trial_id))
        study.tell(trial, state=TrialState.PRUNED)
        return out, study.trials[trial.number].user_attrs.get("reason", "")  # the pruner writes it on the trial

    assert decide(0.5) == (False, "")  # 6 at epoch 1: the best two go on, and 0.5 is the best
    paused, why = decide(2.5)  # 7 there: best two are 0.5 and 1.0
    assert paused and why.startswith("rank 4 of 7 after 1/3 of epoch 1, where the best 2 go on;")
    assert decide(9.0, step=2) == (False, "")  # epoch 2 is no rung


@pytest.mark.parametrize("seeds_in_full", [True, False])
def test_a_seed_config_ranked_last_at_a_rung_goes_on_unless_seeds_may_pause(seeds_in_full):
    study = optuna.create_study()
    pruner = asha(seeds_in_full=seeds_in_full)
    for v in (1.0, 2.0, 3.0, 4.0, 5.0):  # five candidates at epoch 1 (step 3): the best one goes on
        study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={3: v}, user_attrs={}))

    def decide(**attrs):
        trial = study.ask()
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        trial.report(9.0, 3)  # the worst at epoch 1
        out = pruner.prune(study, study._storage.get_trial(trial._trial_id))
        study.tell(trial, state=TrialState.PRUNED)
        return out

    assert decide(seed="small") is not seeds_in_full  # the researcher's config trains in full: never paused
    assert decide(seed="small", candidate=5) is not seeds_in_full  # nor a later trial that continues it (5)
    assert decide() is True  # any other candidate ranked last pauses
    assert decide(seed="") is True  # an empty label is no seed


def test_near_the_deadline_a_candidate_goes_on_or_is_promoted_only_if_it_reaches_its_next_rung_in_time():
    now = time.time()
    study = optuna.create_study()
    for v in (2.0, 3.0, 4.0, 5.0, 6.0):  # five candidates at epoch 1 (step 3 of 30)
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED, intermediate_values={3: v}, user_attrs={"status": "paused", "wall_seconds": 60}
            )
        )

    def decide(pruner, elapsed, value):  # the best at epoch 1 (step 3), after `elapsed` seconds: 20 s a third
        trial = study.ask()
        trial.set_user_attr("elapsed", elapsed)
        trial.report(value, 3)
        out = pruner.prune(study, study._storage.get_trial(trial._trial_id))
        study.tell(trial, state=TrialState.PRUNED)
        return out, study.trials[trial.number].user_attrs.get("reason", "")  # the pruner writes it on the trial

    # epoch 3 (step 9) is 6 thirds away: 120 s at 20 s a third
    assert decide(asha(deadline=now + 200), 60.0, 1.0) == (False, "")
    assert decide(asha(), 60.0, 0.9) == (False, "")  # no budget: no limit
    paused, why = decide(asha(deadline=now + 100), 60.0, 0.8)
    assert (
        paused
        and why.startswith("rank 1 of ")
        and "(60 s per epoch) it would not be at epoch 3 before the study's budget ends" in why
    )
    # a paused candidate in the best third is promoted only if it would reach its next rung in time
    trials = [_trial(n, {3: v}, wall_seconds=60.0) for n, v in enumerate([1.0, 2.0, 3.0])]
    soon, late = asha(deadline=now + 200), asha(deadline=now + 100)
    assert [t.number for t in promotions(trials, soon.rungs, in_time=soon.in_time)] == [0]
    assert promotions(trials, late.rungs, in_time=late.in_time) == []


def test_near_the_deadline_the_leading_candidate_is_finished_and_nothing_that_cannot_finish_starts():
    now = time.time()
    # three candidates reached epoch 1 (step 3 of 30); wall time counts from each candidate's start:
    # the leader 0 took 60 s for 3 thirds, so 27 more need 540 s; candidate 4 needs 27 x 15 = 405 s
    trials = [
        _trial(0, {1: 2.0, 3: 1.0}, wall_seconds=60.0),
        _trial(1, {1: 3.0}, wall_seconds=20.0),
        _trial(2, {1: 1.5}, wall_seconds=20.0),
        _trial(3, {1: 2.5}, wall_seconds=20.0),
        _trial(4, {1: 1.8, 3: 1.2}, wall_seconds=45.0),
        _trial(5, {1: 1.9, 3: 1.4}, wall_seconds=45.0),
    ]
    far, near, late, gone = (asha(deadline=now + left) for left in (3600, 700, 580, 300))
    assert far.closing(trials) is None  # too early: the time goes to more candidates first
    assert near.closing(trials) == 0 and near.finishing == 0  # 1.1 x 540 s <= 700 s <= 1.5 x 540 s
    assert late.closing(trials) == 4  # 580 s cannot finish the leader safely; the next best fits (445-607 s)
    assert gone.closing(trials) is None  # nobody can finish: nobody is started on it
    assert [t.number for t in promotions(trials, far.rungs, False, closing=far.closing(trials))] == [0, 2]  # ASHA's
    assert [t.number for t in promotions(trials, late.rungs, False, closing=late.closing(trials))] == [0, 4, 2]
    assert asha(target=6).final(trials) and not asha(target=7).final(trials)
    # the leader is picked from a ranking: one candidate alone at epoch 1 is no leader, however near the deadline
    alone = trials[:4]
    assert asha(deadline=now + 700).closing(alone) is None
    assert asha(deadline=now + 700, target=4).closing(alone) == 0  # unless the study has all its candidates
    # once a candidate is trained in full (a seed), no leader is finished: the time left goes to ASHA
    seeded = trials + [_trial(6, {1: 3.0, 3: 2.5, 30: 0.5}, state=TrialState.COMPLETE, status="", wall_seconds=400.0)]
    assert asha(deadline=now + 700).closing(seeded) is None
    # a leader only at the probe is no leader: its pace is start-up, and two probes rank nothing
    probes = [_trial(0, {1: 2.0}, wall_seconds=40.0), _trial(1, {1: 3.0}, wall_seconds=20.0)]
    assert asha(deadline=now + 1500).closing(probes) is None


@pytest.mark.slow
def test_asha_pauses_candidates_at_rungs_and_promotes_the_best_from_their_checkpoints(workdir):
    from search.study import count_finished

    storage = f"sqlite:///{workdir}/db.sqlite"
    (workdir / "space.yaml").write_text(SPACE.replace("epochs: 2", "epochs: 4"))  # rungs: 1/3 epoch, 1, 4 epochs
    s = settings_from_space("space.yaml", "data", 5, sampler="random", pruner="asha", prune_on="loss", seed=0)
    study = launch("asha", s, storage)
    trials = study.trials
    assert count_finished(study) == 5  # the target counts candidates; promotions come on top
    first = trials[0]  # no rival at the probe yet: it waits there instead of training in full
    assert first.state == optuna.trial.TrialState.PRUNED and first.user_attrs["status"] == "paused"
    # a third of the batches (rounded up)
    assert list(first.intermediate_values) == [1] and 0 < first.user_attrs["epochs"] < 1
    assert first.user_attrs["reason"].startswith("rank 1 of 1 after 1/3 of epoch 1,")
    for t in trials:  # each trial reports its candidate's whole curve: the probe, then the dev CTC loss per epoch
        epochs = {step // 3: v for step, v in t.intermediate_values.items() if step % 3 == 0}
        assert list(epochs.values()) == pytest.approx(t.user_attrs["history"]["dev_loss"]), t.number
        assert list(epochs) == list(range(1, len(epochs) + 1)) and 1 in t.intermediate_values
    at_1 = {t.user_attrs["candidate"]: t.intermediate_values[1] for t in trials}
    assert len(at_1) == 5
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.user_attrs["epochs"] == 4 for t in done)
    # the rungs are final once all 5 are in: the best at the probe reached the full 4 epochs
    assert min(at_1, key=at_1.get) in {t.user_attrs["candidate"] for t in done}
    for t in trials:
        if "continues" in t.user_attrs:  # a promotion: the paused trial's parameters, run directory and checkpoint
            src = trials[t.user_attrs["continues"]]
            assert src.user_attrs["status"] == "paused" and t.params == src.params
            assert t.user_attrs["run_dir"] == src.user_attrs["run_dir"] and t.user_attrs["resumed"] is True
            assert t.intermediate_values[1] == src.intermediate_values[1]  # resumed where it stood, mid-epoch 1
    assert any("continues" in t.user_attrs for t in trials)
    df = trials_frame("asha", storage)
    from search.results.compare import candidates

    assert sorted(candidates(df)["candidate"]) == sorted(at_1)  # the leaderboard shows each candidate once
