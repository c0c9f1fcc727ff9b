"""The vocabulary of trial records: statuses, attribute keys, and what each state counts for."""

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.trials import COLUMNS, METRICS, Attr, Status, counts, in_play, mark, paused, run_dir_of, run_key
from stt.core.errors import StudyError
from stt.train.trainer import RunStatus, TrainResult


def test_every_way_a_run_can_end_is_a_trial_status_and_every_metric_is_a_result_field():
    assert {s.value for s in RunStatus} <= {s.value for s in Status}
    fields = set(TrainResult.__dataclass_fields__)
    assert set(METRICS) - {Attr.STATUS, Attr.REASON} <= fields  # the objective copies these from the run's result
    assert len(set(COLUMNS)) == len(COLUMNS) and set(METRICS) <= set(COLUMNS)


def _t(state, **attrs):
    return create_trial(state=state, values=[0.5] if state == TrialState.COMPLETE else None, user_attrs=attrs)


@pytest.mark.parametrize(
    "state,attrs,counted,playing",
    [
        (TrialState.COMPLETE, {}, True, True),
        (TrialState.PRUNED, {"status": "paused"}, True, True),
        (TrialState.FAIL, {"status": "error"}, True, True),  # failed on its own: it was a candidate
        (TrialState.FAIL, {"status": "build_error"}, True, True),
        (TrialState.FAIL, {"status": "interrupted"}, False, False),  # resumed later: not yet a result
        (TrialState.FAIL, {"status": "beyond_target"}, False, False),  # stepped aside
        (TrialState.RUNNING, {}, False, True),
        (TrialState.WAITING, {}, False, True),
        (TrialState.COMPLETE, {"continues": 3}, False, False),  # a promotion: its candidate already counted
        (TrialState.RUNNING, {"continues": 3}, False, False),
    ],
)
def test_what_each_state_counts_for(state, attrs, counted, playing):
    t = _t(state, **attrs)
    assert counts(t) is counted and in_play(t) is playing


def test_a_trial_is_marked_with_a_status_and_its_reason():
    study = optuna.create_study()
    trial = study.ask()
    mark(trial, Status.PAUSED, "rank 3 of 3 at epoch 1")
    study.tell(trial, state=TrialState.PRUNED)
    t = study.trials[0]
    assert t.user_attrs == {"status": "paused", "reason": "rank 3 of 3 at epoch 1"} and paused(t)
    assert type(t.user_attrs["status"]) is str  # stored as plain text: any Optuna tool reads it


def test_a_run_directory_is_derived_from_the_host_root_the_study_and_the_candidate_never_read(tmp_path):
    root, uid = tmp_path / "runs", "0123456789abcdef" * 2
    study = optuna.create_study()
    for attrs in ({}, {Attr.CANDIDATE: 0, Attr.RUN_DIR: "../../elsewhere"}, {Attr.CANDIDATE: 1, Attr.RUN_DIR: "/etc"}):
        study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=attrs))
    key = run_key("s", uid)
    assert key == "s-01234567"
    dirs = [run_dir_of(root, key, t) for t in study.trials]
    assert dirs == [(root / "s-01234567" / "trial_0").resolve()] * 2 + [(root / "s-01234567" / "trial_1").resolve()]
    # what the storage says about the candidate, the uid or the name must still be one plain folder below the root
    for bad in ({Attr.CANDIDATE: 9}, {Attr.CANDIDATE: -1}, {Attr.CANDIDATE: "../x"}, {Attr.CANDIDATE: True}):
        study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=bad))
        with pytest.raises(StudyError, match=r"^trial \d+: its candidate .* is not a trial before it"):
            run_dir_of(root, key, study.trials[-1])
    with pytest.raises(StudyError, match=r"^study 's': its uid '\.\./\.\./x' is not one launch writes"):
        run_key("s", "../../x")
    assert run_key("my study+wer", None) == "my study+wer"  # made before launch checked names: one folder still
    for name in ("../../escape", "a/b", "x" * 300, "", ".."):
        with pytest.raises(StudyError, match=r"^--study .*: expected 1 to 100 letters, digits"):
            run_key(name, uid)
