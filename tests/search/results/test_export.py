"""Export: the best trial's run config, as the YAML `stt train --config` takes, and its weights only from inside
the study's runs root."""

import json

import optuna
import pytest
import torch

from search.results.export import export
from search.storage import open_storage
from stt.core.errors import StudyError
from stt.train.run_config import load_run_config


def _study(tmp_path, trials: list[tuple[str, float, str]]):
    """A stored study whose trials end as given: (state, dev WER, run_dir)."""
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=open_storage(url, create=True))
    study.set_user_attr("runs_dir", str(tmp_path / "runs"))
    config = json.dumps(load_run_config("small.yaml").to_dict())
    for state, wer, run_dir in trials:
        t = study.ask()
        for k, v in {"config": config, "dev_wer": wer, "run_dir": run_dir, "epochs": 3, "params": 10}.items():
            t.set_user_attr(k, v)
        if state == "paused":
            t.set_user_attr("status", "paused")
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, wer)
    return url


def test_the_best_finished_trial_is_exported_as_a_config_stt_train_reads(tmp_path):
    url = _study(tmp_path, [("complete", 0.3, "a"), ("complete", 0.2, "b"), ("paused", 0.1, "c")])
    out, t = export("s", tmp_path / "out" / "best.yaml", url)
    assert t.number == 1  # the best trained in full; the paused one's 0.1 is after fewer epochs
    text = out.read_text()
    assert text.startswith("# exported from study 's', trial 1: dev WER 0.2000 after 3 of 20 epochs")
    assert load_run_config(out) == load_run_config("small.yaml")


def test_before_any_trial_is_trained_in_full_the_best_paused_one_is_exported(tmp_path):
    url = _study(tmp_path, [("paused", 0.6, "a"), ("paused", 0.4, "b")])
    assert export("s", tmp_path / "best.yaml", url)[1].number == 1


def test_weights_are_copied_only_from_the_hosts_own_runs_root(tmp_path):
    """The database's runs_dir and run_dir are not read: the weights are RUNS/<study>/trial_<n>/best.pt under this
    host's runs root, and a best.pt that links out of it is refused."""
    url = _study(tmp_path, [("complete", 0.2, "x"), ("complete", 0.3, "x")])
    (tmp_path / "runs" / "x").mkdir(
        parents=True
    )  # the database's runs_dir and run_dir: weights a trusting export copied
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "runs" / "x" / "best.pt")
    (tmp_path / "outside").mkdir()
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "outside" / "best.pt")
    host = tmp_path / "host-runs"
    (host / "s" / "trial_0").mkdir(parents=True)
    torch.save({"model": {"w": torch.ones(2)}}, host / "s" / "trial_0" / "best.pt")
    out, _ = export("s", tmp_path / "best.yaml", url, weights=True, runs_dir=str(host))
    assert torch.equal(torch.load(out.with_suffix(".pt"), weights_only=True)["model"]["w"], torch.ones(2))
    (host / "s" / "trial_1").mkdir()
    (host / "s" / "trial_1" / "best.pt").symlink_to(tmp_path / "outside" / "best.pt")
    with pytest.raises(StudyError, match=r"trial 1: .*trial_1/best.pt leads outside the runs root"):
        export("s", tmp_path / "other.yaml", url, trial=1, weights=True, runs_dir=str(host))
    assert not (tmp_path / "other.yaml").exists()  # every check before the first write
