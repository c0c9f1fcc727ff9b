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
    assert (workdir / "report" / "report.html").exists() and (workdir / "report" / "trials.csv").exists()


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


def _half_created(storage: str, name: str, creator: dict | None) -> optuna.Study:
    """A study as a launch leaves it while creating it: settings written, no uid yet."""
    from search.study import CREATOR

    study = optuna.create_study(study_name=name, storage=storage)
    study.set_user_attr("note", "made by the first launch")
    if creator is not None:
        study.set_user_attr(CREATOR, creator)
    return study


@pytest.mark.slow
def test_a_launch_waits_for_another_launch_creating_the_same_study_and_then_refuses(workdir):
    """Two launches of one new name: the second waits while the first (alive) creates it, then says the name is
    taken, in one line; it never deletes the first's study as 'half-created'."""
    import os
    import subprocess

    from search.workers import process_namespace
    from tests.search.conftest import SEARCH, launch_argv

    storage = f"sqlite:///{workdir}/db.sqlite"
    first = _half_created(storage, "both", {"worker": f"host:{os.getpid()}", "ns": process_namespace()})
    proc = subprocess.Popen([*SEARCH, *launch_argv("both", storage, 2)], stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "is being created by another launch" in line:  # it waits for us: finish creating
            first.set_user_attr("uid", "0" * 32)
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=120) == 2, "".join(lines)[-2000:]
    assert lines[-1].startswith("stt-search launch: error: study 'both' already exists in sqlite:///")
    assert "Traceback" not in "".join(lines)
    kept = optuna.load_study(study_name="both", storage=storage)
    assert kept._study_id == first._study_id and kept.user_attrs["note"] == "made by the first launch"


def test_a_study_half_created_by_a_dead_launch_is_created_afresh_at_once(workdir):
    from search.study import create_study
    from search.workers import process_namespace

    storage = f"sqlite:///{workdir}/db.sqlite"
    dead = subprocess_pid_that_exited()
    _half_created(storage, "again", {"worker": f"host:{dead}", "ns": process_namespace()})
    study = create_study("again", settings_from_space("space.yaml", "data", 2), storage)
    assert "uid" in study.user_attrs and "note" not in study.user_attrs  # the dead launch's study is gone


def subprocess_pid_that_exited() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
