"""The vocabulary of trial records: statuses, attribute keys, and what each state counts for."""

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.trials import COLUMNS, METRICS, Attr, Status, counts, in_play, mark, paused, run_dir_of
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


def test_a_stored_run_directory_never_leads_out_of_the_runs_root(tmp_path):
    root = tmp_path / "runs"
    assert run_dir_of(root, "s-1234/trial_3") == (root / "s-1234" / "trial_3").resolve()
    for rel in ("../elsewhere", "s/../../elsewhere", str(tmp_path / "abs"), "", None, "."):
        assert run_dir_of(root, rel) is None, rel
