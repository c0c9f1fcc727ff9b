"""The stop rules: a worker stops at its study's target, and a study whose candidates keep failing or cannot be
trained stops with one line instead of spinning through its target."""

import optuna
import pytest

from search.cli import main as search_main
from search.results.compare import trials_frame
from search.space import SpaceError
from search.stopping import FAILED_AFTER, STUCK_AFTER, StopRules
from search.trials import Status, mark
from tests.search.conftest import launch_argv


def _run(outcomes: list, target: int = 100) -> tuple[optuna.Study, StopRules]:
    """A study whose trial i ends as outcomes[i]: "ok", or a Status; the rules are its only callback."""
    study = optuna.create_study()
    rules = StopRules("s", target, "space.yaml")

    def objective(trial):
        outcome = outcomes[trial.number]
        if outcome == "ok":
            return 0.5
        mark(trial, outcome, f"trial {trial.number}: {outcome}")
        if outcome in (Status.ERROR, Status.BUILD_ERROR):
            raise RuntimeError(outcome)
        raise optuna.TrialPruned()

    study.optimize(objective, n_trials=len(outcomes), callbacks=[rules], catch=(RuntimeError,))
    return study, rules


def test_the_target_stops_the_worker_and_is_no_error():
    study, rules = _run(["ok"] * 10, target=4)
    assert len(study.trials) == 4 and not rules.fired and rules.error() is None


def test_a_run_of_untrainable_candidates_stops_the_study_with_the_last_reason():
    study, rules = _run([Status.OVER_BUDGET, Status.INFEASIBLE] * 20)
    assert len(study.trials) == STUCK_AFTER and rules.fired
    assert str(rules.error()) == (
        f"study 's': the last {STUCK_AFTER} candidates from space.yaml could not be trained "
        f"(last: trial {STUCK_AFTER - 1}: infeasible); loosen --max-params/--max-gflops or narrow the space"
    )


def test_a_run_of_failures_stops_the_study_but_one_success_resets_it():
    outcomes = [Status.ERROR] * (FAILED_AFTER - 1) + ["ok"] + [Status.BUILD_ERROR] * FAILED_AFTER + ["ok"]
    study, rules = _run(outcomes)
    assert len(study.trials) == 2 * FAILED_AFTER and rules.failing == f"trial {2 * FAILED_AFTER - 1}: build_error"
    assert str(rules.error()).startswith(f"study 's': the last {FAILED_AFTER} candidates failed")


@pytest.mark.slow
def test_candidates_that_fail_at_build_count_and_five_in_a_row_stop_the_study(workdir, monkeypatch, capfd):

    def broken(trial, space, max_stride):
        trial.suggest_int("width", 8, 64)
        raise SpaceError("space.yaml: branch.kernel: 4 cannot keep 'same' length")

    monkeypatch.setattr("search.objective.sample_config", broken)
    storage = f"sqlite:///{workdir}/db.sqlite"
    code = search_main(launch_argv("bad", storage, 50, "--sampler", "random"))
    err = capfd.readouterr().err  # file-descriptor level: Optuna's log handler holds the original stderr
    assert code == 2 and "the last 5 candidates failed (last: SpaceError: space.yaml: branch.kernel: 4" in err
    assert "Traceback" not in err  # one line per candidate, not a traceback each
    df = trials_frame("bad", storage)
    assert len(df) == 5 and (df["state"] == "FAIL").all() and (df["status"] == "build_error").all()
    from search.study import count_finished

    assert count_finished(optuna.load_study(study_name="bad", storage=storage)) == 5  # they count towards the target


@pytest.mark.slow
def test_failures_before_training_count_and_five_in_a_row_stop_the_study(workdir, monkeypatch, capfd):
    """A failure no stage foresaw (here: the run directory cannot be made, as with a 300-character study name
    before names were checked) counts like one in training: the study stops after five, it does not spin."""
    made = []

    def unmakeable(path, *args, **kwargs):
        made.append(path)
        if len(made) > 3 * FAILED_AFTER:  # the rule never fired: stop the test instead of spinning forever
            raise KeyboardInterrupt
        raise OSError(36, "File name too long", str(path))

    monkeypatch.setattr("search.objective.make_dir", unmakeable)
    storage = f"sqlite:///{workdir}/db.sqlite"
    code = search_main(launch_argv("spin", storage, 50, "--sampler", "random"))
    err = capfd.readouterr().err
    assert code == 2, err[-2000:]
    assert "the last 5 candidates failed (last: OSError: [Errno 36] File name too long" in err
    df = trials_frame("spin", storage)
    assert len(df) == FAILED_AFTER and (df["status"] == "error").all()
