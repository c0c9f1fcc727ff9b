"""One trial's life: duplicates reused, budgets that cost nothing, racers that step aside, checkpoints
that belong to their config, and a trial cut by the study's budget resumed."""

import json

import optuna
import pytest

from search.results.compare import trials_frame
from search.settings import settings_from_space
from search.stopping import STUCK_AFTER
from search.study import launch, run_study
from stt.core.errors import StudyError
from tests.search.conftest import SPACE


@pytest.mark.slow
def test_duplicates_are_reused_and_budgets_cost_nothing(workdir):
    storage = f"sqlite:///{workdir}/db.sqlite"
    s = settings_from_space("space.yaml", "data", 1, sampler="random", pruner="none", seed=0)
    study = launch("dup", s, storage)
    first = study.trials[0]
    study.enqueue_trial(first.params)
    s2 = optuna.load_study(study_name="dup", storage=storage)
    s2.set_user_attr("trials", 2)
    run_study("dup", storage)
    df = trials_frame("dup", storage)
    assert df.loc[1, "duplicate_of"] == 0 and df.loc[1, "dev_wer"] == df.loc[0, "dev_wer"]
    assert df.loc[1, "run_dir"] == df.loc[0, "run_dir"]  # no second training run
    s3 = settings_from_space("space.yaml", "data", 2, sampler="random", pruner="none", seed=1, max_params=1000)
    launch("budget", s3, storage)
    df = trials_frame("budget", storage)
    assert (df["state"] == "PRUNED").all() and (df["status"] == "over_budget").all()
    assert df["reason"].str.contains("--max-params 1,000").all() and df["run_dir"].isna().all()
    # a budget nothing in the space can meet: the study gives up with one line instead of spinning to its target
    s4 = settings_from_space("space.yaml", "data", 500, sampler="random", pruner="none", seed=1, max_params=1000)
    with pytest.raises(StudyError, match=r"last 20 candidates from space could not be trained .*--max-params"):
        launch("hopeless", s4, storage)
    assert len(trials_frame("hopeless", storage)) == STUCK_AFTER


def test_target_counts_running_trials_and_the_later_racer_steps_aside(workdir):
    from search.objective import Objective
    from search.space import load_space

    study = optuna.create_study()
    first, second, third = study.ask(), study.ask(), study.ask()  # three workers started at once
    objective = Objective(space=load_space("small.yaml"), corpus=None, runs_dir="runs", target=2)  # none needed
    assert not objective._beyond_target(first) and not objective._beyond_target(second)
    assert objective._beyond_target(third)
    assert objective(third) != objective(third)  # nan: Optuna fails it; it does not count
    assert third.user_attrs["status"] == "beyond_target"


def test_a_recreated_study_never_resumes_the_old_ones_checkpoints(tmp_path):
    from search.objective import _resumable

    run_dir = tmp_path / "s" / "trial_0"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"checkpoint")
    (run_dir / "trial.json").write_text(json.dumps({"study": "s", "trial": 0, "config_hash": "aaaa"}))
    assert _resumable(run_dir, "aaaa") and not _resumable(run_dir, "bbbb")
    (run_dir / "trial.json").unlink()
    assert not _resumable(run_dir, "aaaa")  # unknown provenance: start afresh


@pytest.mark.slow
def test_a_trial_cut_by_the_study_budget_resumes_from_its_checkpoint(workdir):
    from search.study import create_study, run_key

    storage = f"sqlite:///{workdir}/db.sqlite"
    (workdir / "space.yaml").write_text(SPACE.replace("epochs: 2", "epochs: 3"))
    s = settings_from_space("space.yaml", "data", 1, sampler="random", pruner="none", seed=0)
    study = create_study("cut", s, storage)
    from search.fidelity import FidelityPlan
    from search.objective import Objective
    from search.space import load_space
    from stt.data.training_data import open_training_data

    objective = Objective(
        space=load_space("space.yaml"),
        corpus=open_training_data(workdir / "data", progress=False),
        runs_dir=s.runs_dir,
        run_key=run_key(study),
        max_total_stride=2,
        plan=FidelityPlan(3, deadline=0.0),  # the budget is over already
    )
    study.optimize(objective, n_trials=1, catch=(Exception,))  # the budget is over: it stops after epoch 1
    first = study.trials[0]
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["status"] == "interrupted"
    assert "time budget ran out after epoch 1" in first.user_attrs["reason"]
    run_study("cut", storage)  # no budget now: the interrupted trial is re-queued and continues
    again = optuna.load_study(study_name="cut", storage=storage).trials[1]
    assert again.state == optuna.trial.TrialState.COMPLETE and again.user_attrs["resumed"] is True
    assert again.user_attrs["epochs"] == 3 and again.user_attrs["run_dir"] == first.user_attrs["run_dir"]
    # a trial whose last epoch ends past the budget is done, not interrupted
    (workdir / "one.yaml").write_text(SPACE.replace("epochs: 2", "epochs: 1"))
    s1 = settings_from_space("one.yaml", "data", 1, sampler="random", pruner="none", seed=0)
    last = create_study("last", s1, storage)
    objective.space, objective.run_key = load_space("one.yaml"), run_key(last)
    last.optimize(objective, n_trials=1, catch=(Exception,))
    assert last.trials[0].state == optuna.trial.TrialState.COMPLETE and last.trials[0].user_attrs["epochs"] == 1
