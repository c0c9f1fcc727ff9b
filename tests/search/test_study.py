"""Studies end to end on a tiny corpus: database rows, trials_frame, export -> stt train, compare; seeds and
enqueued configs as the first trials."""

import json

import optuna
import pytest

from search.cli import main as search_main
from search.results.compare import trials_frame
from search.settings import settings_from_space
from search.space import SpaceError
from search.study import launch
from stt.cli import main as stt_main
from tests.search.conftest import SPACE, rows


@pytest.mark.slow
def test_four_trial_study_lands_in_the_database_and_exports_a_trainable_config(workdir):
    storage = f"sqlite:///{workdir}/db.sqlite"
    s = settings_from_space("space.yaml", "data", 4, sampler="random", pruner="none", seed=0)
    study = launch("e2e", s, storage)
    stored = rows(workdir / "db.sqlite")
    assert len(stored) == 4 and all(state == "COMPLETE" for _, state, _ in stored)
    for _, _, config in stored:
        cfg = json.loads(json.loads(config))
        assert cfg["model"]["layers"] and cfg["frontend"] == "fbank"
    df = trials_frame("e2e", storage)
    assert list(df["trial"]) == [0, 1, 2, 3] and (df["state"] == "COMPLETE").all()
    for col in (
        "dev_wer",
        "dev_cer",
        "test_wer",
        "params",
        "gflops_per_second",
        "epochs",
        "wall_seconds",
        "audio_seconds_per_second",
        "device",
        "version",
        "run_dir",
        "n_layers",
        "total_stride",
    ):
        assert df[col].notna().all(), col
    assert (df["epochs"] == 2).all() and (df["value"] == df["dev_wer"]).all()
    assert study.best_value == df["dev_wer"].min()
    assert search_main(["export", "--study", "e2e", "--storage", storage, "-o", "best.yaml", "--weights"]) == 0
    assert (workdir / "best.pt").exists()
    assert stt_main(["train", "--config", "best.yaml", "--data", "data", "--epochs", "1", "--out", "rerun"]) == 0
    assert json.loads((workdir / "rerun" / "result.json").read_text())["epochs"] == 1
    assert search_main(["compare", "e2e", "--storage", storage, "--out", "report"]) == 0
    assert (workdir / "report" / "report.html").exists() and (workdir / "report" / "wer_vs_params.png").exists()


def _point_of_space(path, seed=5):
    """A run config the test space can sample, saved as YAML (what `export` writes); the tiny corpus allows stride 4."""
    from search.space import load_space, sample_config

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    run = sample_config(trial, load_space("space.yaml"), 4)
    run.save(path)
    return trial.params


def test_seeds_and_enqueued_configs_are_the_first_trials_with_their_own_parameters(workdir):
    from search.study import create_study

    storage = f"sqlite:///{workdir}/db.sqlite"
    mine = _point_of_space(workdir / "mine.yaml")
    theirs = _point_of_space(workdir / "theirs.yaml", seed=6)
    (workdir / "seeded.yaml").write_text(SPACE + "seeds: [mine.yaml]\n")
    s = settings_from_space("seeded.yaml", "data", 4, sampler="tpe", seed=0)
    study = create_study("warm", s, storage, enqueue=("theirs.yaml",))
    waiting = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [mine, theirs]  # the space's seeds, then --enqueue's
    assert [t.user_attrs["seed"] for t in waiting] == ["mine.yaml", "theirs.yaml"]
    # a config the space cannot sample is refused before the study exists
    with pytest.raises(SpaceError, match=r"seed small: not in the space: width is 192"):
        create_study("cold", s, storage, enqueue=("small",))
    assert "cold" not in [x.study_name for x in optuna.get_all_study_summaries(storage)]
