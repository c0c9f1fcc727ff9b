"""Studies end to end on a tiny corpus: database rows, trials_frame, export -> stt train, duplicates,
budgets, a SIGKILLed worker resumed from its checkpoint, and one-line errors."""

import json
import shutil
import signal
import sqlite3
import subprocess
import sys

import optuna
import pytest

from search.cli import main as search_main
from search.compare import trials_frame
from search.space import SpaceError
from search.study import STUCK_AFTER, StudyError, launch, run_study, settings_from_space
from stt.cli import main as stt_main

SPACE = """
frontend: fbank
width: [32, 48]
layers: {low: 1, high: 2}
layer: {stride: [1, 2], branches: {low: 1, high: 2}, d_ff: [1]}
branch:
  type: [conv_block, separable_conv_block, attention_conv_block, conv_attention_conv_block]
  kernel: [3, 5]
  dilation: [1, 2]
  glu: [false, true]
  heads: [2, 4]
  dropout: 0.0
train: {lr: {low: 0.003, high: 0.01, log: true}, batch_frames: [6000], epochs: 2}
"""


@pytest.fixture
def workdir(tiny_corpus, tmp_path, monkeypatch):
    shutil.copytree(tiny_corpus, tmp_path / "data")
    (tmp_path / "space.yaml").write_text(SPACE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _rows(db):
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT t.number, t.state, a.value_json FROM trials t LEFT JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = 'config' ORDER BY t.number"
    ).fetchall()
    con.close()
    return rows


@pytest.mark.slow
def test_four_trial_study_lands_in_the_database_and_exports_a_trainable_config(workdir):
    storage = f"sqlite:///{workdir}/db.sqlite"
    s = settings_from_space("space.yaml", "data", 4, sampler="random", pruner="none", seed=0)
    study = launch("e2e", s, storage)
    rows = _rows(workdir / "db.sqlite")
    assert len(rows) == 4 and all(state == "COMPLETE" for _, state, _ in rows)
    for _, _, config in rows:
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


@pytest.mark.slow
def test_sigkilled_worker_is_resumed_from_its_checkpoint(workdir):
    storage = f"sqlite:///{workdir}/db.sqlite"
    space = SPACE.replace("epochs: 2", "epochs: 4").replace("batch_frames: [6000]", "batch_frames: [1500]")
    (workdir / "space.yaml").write_text(space)
    cmd = [
        sys.executable,
        "-m",
        "search.cli",
        "launch",
        "--space",
        "space.yaml",
        "--data",
        "data",
        "--study",
        "k",
        "--trials",
        "3",
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--seed",
        "2",
        "--storage",
        storage,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the worker logs each epoch after its checkpoint is on disk
        if line.startswith("trial 1: epoch 1 "):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    study = optuna.load_study(study_name="k", storage=storage)
    before = study.trials
    # stored relative to the study's runs root, which the study records as an absolute path
    assert before[1].user_attrs["run_dir"] == f"k-{study.user_attrs['uid'][:8]}/trial_1"
    victim = workdir / "results" / "runs" / before[1].user_attrs["run_dir"]
    assert study.user_attrs["runs_dir"] == str(workdir / "results" / "runs")
    assert (victim / "last.pt").exists(), "trial 1 never checkpointed"
    assert before[1].state.name == "RUNNING" and before[0].state.name == "COMPLETE"
    assert search_main(["resume", "--study", "k", "--storage", storage]) == 0
    trials = optuna.load_study(study_name="k", storage=storage).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    assert trials[1].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == trials[1].params
    assert retry[0].user_attrs["run_dir"] == before[1].user_attrs["run_dir"] and retry[0].user_attrs["resumed"] is True
    assert retry[0].user_attrs["epochs"] == 4
    epochs = [json.loads(x)["epoch"] for x in (victim / "metrics.jsonl").read_text().splitlines()]
    assert epochs[0] == 1 and epochs[-1] == 4
    assert trials[0].user_attrs["dev_wer"] == before[0].user_attrs["dev_wer"]  # the finished trial is untouched


@pytest.mark.slow
def test_a_killed_training_process_fails_its_trial_and_the_worker_goes_on(workdir):
    import os

    storage = f"sqlite:///{workdir}/db.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "search.cli",
        "launch",
        "--space",
        "space.yaml",
        "--data",
        "data",
        "--study",
        "c",
        "--trials",
        "3",
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--seed",
        "4",
        "--storage",
        storage,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if killed is None and line.startswith("trial 1: training in process "):
            killed = int(line.split()[5])
            os.kill(killed, signal.SIGKILL)  # as the kernel's OOM killer would
    assert proc.wait() == 0, "".join(lines)[-2000:]
    trials = optuna.load_study(study_name="c", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["status"] == "error"
    assert (
        trials[1].user_attrs["reason"]
        == f"training process {killed} was killed by SIGKILL (the kernel's OOM killer sends SIGKILL: out of memory?)"
    )


def test_bad_input_is_one_line_and_non_zero(workdir, capsys, monkeypatch):
    monkeypatch.setattr("search.storage.RETRY_DELAYS", (0.01,))  # a server that is not there is waited for briefly
    storage = f"sqlite:///{workdir}/db.sqlite"
    assert search_main(["resume", "--study", "ghost", "--storage", storage]) == 2
    assert "db.sqlite: no such file" in capsys.readouterr().err and not (workdir / "db.sqlite").exists()
    optuna.create_study(study_name="other", storage=storage)
    assert search_main(["resume", "--study", "ghost", "--storage", storage]) == 2
    assert "no study 'ghost'" in capsys.readouterr().err
    assert search_main(["resume", "--study", "x", "--storage", "postgresql://nobody@127.0.0.1:1/none"]) == 2
    assert "storage postgresql://nobody@127.0.0.1:1/none" in capsys.readouterr().err
    optuna.create_study(study_name="empty", storage=storage)
    assert search_main(["export", "--study", "empty", "--storage", storage, "-o", "x.yaml"]) == 2
    assert "no finished trial" in capsys.readouterr().err and not (workdir / "x.yaml").exists()
    (workdir / "bad.yaml").write_text("width: [8]\nlayers: 1\nbranch: {kernels: [3]}\n")
    assert search_main(["launch", "--space", "bad.yaml", "--data", "data", "--study", "b", "--storage", storage]) == 2
    assert "branch.kernels: unknown key" in capsys.readouterr().err
    assert (
        search_main(["launch", "--space", "space.yaml", "--data", "nodata", "--study", "c", "--storage", storage]) == 2
    )
    assert "nodata" in capsys.readouterr().err


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
def test_workers_seeded_alike_propose_different_candidates_and_a_seeded_study_replays(sampler):
    import hashlib

    from search.space import load_space, sample_config
    from search.study import make_sampler

    space = load_space("small.yaml")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def run(workers: int) -> list[str]:
        storage = optuna.storages.InMemoryStorage()
        study = optuna.create_study(storage=storage, sampler=make_sampler(sampler, 0, 3))
        # every worker process builds its own sampler from the study's seed, as `stt-search worker` does
        views = [
            optuna.load_study(study_name=study.study_name, storage=storage, sampler=make_sampler(sampler, 0, 3))
            for _ in range(workers)
        ]
        hashes = []
        for _round in range(12 // workers):
            asked = [(v, v.ask()) for v in views]  # all ask before any tells: they run side by side
            for _view, trial in asked:
                run_cfg = sample_config(trial, space, 4)
                hashes.append(hashlib.sha256(json.dumps(run_cfg.to_dict(), sort_keys=True).encode()).hexdigest())
            for v, trial in asked:
                v.tell(trial, float(int(hashes[-1][:6], 16) % 100) / 100)  # any deterministic value
        return hashes

    parallel = run(3)
    assert len(set(parallel)) == 12, "two workers trained the same candidate"
    assert run(1) == run(1)  # one worker, same seed: the same candidates in the same order


def test_target_counts_running_trials_and_the_later_racer_steps_aside(workdir):
    from search.objective import Objective
    from search.space import load_space

    study = optuna.create_study()
    first, second, third = study.ask(), study.ask(), study.ask()  # three workers started at once
    objective = Objective(space=load_space("small.yaml"), data_dir="data", runs_dir="runs", target=2)
    assert not objective._beyond_target(first) and not objective._beyond_target(second)
    assert objective._beyond_target(third)
    assert objective(third) != objective(third)  # nan: Optuna fails it; it does not count
    assert third.user_attrs["status"] == "beyond_target"


@pytest.mark.slow
def test_candidates_that_fail_at_build_count_and_five_in_a_row_stop_the_study(workdir, monkeypatch, capfd):
    from search.space import SpaceError

    def broken(trial, space, max_stride):
        trial.suggest_int("width", 8, 64)
        raise SpaceError("space.yaml: branch.kernel: 4 cannot keep 'same' length")

    monkeypatch.setattr("search.objective.sample_config", broken)
    storage = f"sqlite:///{workdir}/db.sqlite"
    code = search_main(
        [
            "launch",
            "--space",
            "space.yaml",
            "--data",
            "data",
            "--study",
            "bad",
            "--trials",
            "50",
            "--storage",
            storage,
            "--sampler",
            "random",
        ]
    )
    err = capfd.readouterr().err  # file-descriptor level: Optuna's log handler holds the original stderr
    assert code == 2 and "the last 5 candidates failed (last: SpaceError: space.yaml: branch.kernel: 4" in err
    assert "Traceback" not in err  # one line per candidate, not a traceback each
    df = trials_frame("bad", storage)
    assert len(df) == 5 and (df["state"] == "FAIL").all() and (df["status"] == "build_error").all()
    from search.study import count_finished

    assert count_finished(optuna.load_study(study_name="bad", storage=storage)) == 5  # they count towards the target


@pytest.mark.slow
def test_three_local_workers_share_one_sqlite_study_exactly(workdir):
    storage = f"sqlite:///{workdir}/db.sqlite"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "search.cli",
            "launch",
            "--space",
            "space.yaml",
            "--data",
            "data",
            "--study",
            "w3",
            "--trials",
            "12",
            "--seed",
            "0",
            "--pruner",
            "none",
            "--workers",
            "3",
            "--storage",
            storage,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "database is locked" not in proc.stderr
    trials = optuna.load_study(study_name="w3", storage=storage).trials
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 12, [(t.number, t.state.name, t.user_attrs.get("status")) for t in trials]
    workers = {t.user_attrs["worker"] for t in counted}
    assert len(workers) == 3  # all three took part
    trained = [t.user_attrs["config_hash"] for t in counted if "duplicate_of" not in t.user_attrs]
    assert len(trained) == len(set(trained)), "a config was trained twice"
    assert "12/12 trials finished" in proc.stdout


def test_a_recreated_study_never_resumes_the_old_ones_checkpoints(tmp_path):
    from search.objective import _resumable

    run_dir = tmp_path / "s" / "trial_0"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"checkpoint")
    (run_dir / "trial.json").write_text(json.dumps({"study": "s", "trial": 0, "config_hash": "aaaa"}))
    assert _resumable(run_dir, "aaaa") and not _resumable(run_dir, "bbbb")
    (run_dir / "trial.json").unlink()
    assert not _resumable(run_dir, "aaaa")  # unknown provenance: start afresh


def test_a_run_directory_is_trained_in_by_one_process_at_a_time(tmp_path):
    from search.isolation import RunDirBusy, hold_run_dir

    busy = r"run directory .*run is in use by another training process \(.*:\d+\)"
    with hold_run_dir(tmp_path / "run"), pytest.raises(RunDirBusy, match=busy), hold_run_dir(tmp_path / "run"):
        pass
    with hold_run_dir(tmp_path / "run"):  # released when its holder is done
        pass


def test_passwords_are_never_printed(workdir, capsys, caplog, monkeypatch):
    from search.study import redact

    monkeypatch.setattr("search.storage.RETRY_DELAYS", (0.01, 0.01))  # the retries log the URL too
    assert (
        redact("postgresql://alice:s3cr:et@db.example:5432/optuna") == "postgresql://alice:***@db.example:5432/optuna"
    )
    assert redact("sqlite:///results/studies.db") == "sqlite:///results/studies.db"
    assert search_main(["resume", "--study", "x", "--storage", "postgresql://alice:hunter2@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "alice:***@127.0.0.1:1" in err
    assert "opening again" in caplog.text and "hunter2" not in caplog.text


def test_workers_spread_over_gpus(monkeypatch):
    from search.cli import worker_devices

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert worker_devices(4, None, 2) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert worker_devices(3, None, 1) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices(2, "cpu", 1) == ["cpu", "cpu"]


@pytest.mark.slow
def test_a_sigkilled_worker_s_trial_is_finished_by_another_live_worker(workdir):
    import os

    storage = f"sqlite:///{workdir}/db.sqlite"
    (workdir / "space.yaml").write_text(SPACE.replace("epochs: 2", "epochs: 3").replace("[6000]", "[1500]"))
    cmd = [
        sys.executable,
        "-m",
        "search.cli",
        "launch",
        "--space",
        "space.yaml",
        "--data",
        "data",
        "--study",
        "live",
        "--trials",
        "3",
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--seed",
        "5",
        "--workers",
        "2",
        "--storage",
        storage,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers, victim, lines = {}, None, []
    for line in proc.stderr:
        lines.append(line)
        if ": training in process " in line:  # "trial N: training in process P (worker W, RUN_DIR)"
            workers[int(line.split(":")[0].split()[1])] = int(line.split("(worker ")[1].split(",")[0])
        elif victim is None and ": epoch 1 dev WER" in line:  # a trial checkpointed: kill its worker
            victim = int(line.split(":")[0].split()[1])
            os.kill(workers[victim], signal.SIGKILL)
    out = proc.stdout.read()
    assert proc.wait() == 0, "".join(lines)[-3000:]
    trials = optuna.load_study(study_name="live", storage=storage).trials
    assert trials[victim].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].user_attrs["resumed"] is True
    assert retry[0].user_attrs["worker"] != trials[victim].user_attrs["worker"]  # the survivor finished it
    assert retry[0].user_attrs["epochs"] == 3 and "3/3 trials finished" in out
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3


def test_a_trial_whose_worker_died_before_naming_itself_is_failed_once_it_is_old(tmp_path):
    """Found by bench/kill_recovery.py: a launch SIGKILLed between Optuna's ask and the objective's first
    write left a RUNNING trial with no worker and no heartbeat; every resume then waited for it forever."""
    from search.study import open_storage, requeue_dead_trials

    study = optuna.create_study(study_name="o", storage=open_storage(f"sqlite:///{tmp_path}/o.db", create=True))
    orphan = study.ask()
    named = study.ask()
    named.set_user_attr("worker", "otherhost:1")  # judged by its heartbeat, not here
    assert requeue_dead_trials(study, orphan_after=3600) == []
    assert [t.state.name for t in study.trials] == ["RUNNING", "RUNNING"]  # young: its worker may still be writing
    requeue_dead_trials(study, orphan_after=0)
    trials = study.trials
    assert trials[orphan.number].state.name == "FAIL" and trials[orphan.number].user_attrs["status"] == "orphaned"
    assert trials[named.number].state.name == "RUNNING"


def test_the_leaderboard_reads_a_study_whose_trial_stopped_before_its_config(tmp_path):
    """Found by bench/kill_recovery.py: an orphaned trial has no config beside trials that do (NaN in pandas)."""
    from search.compare import leaderboard, trials_frame
    from search.study import open_storage

    url = f"sqlite:///{tmp_path}/n.db"
    study = optuna.create_study(study_name="n", storage=open_storage(url, create=True))
    study.ask()  # no config
    done = study.ask()
    done.set_user_attr(
        "config",
        json.dumps(
            {
                "model": {"layers": [[[["conv_block", {"in_chan": 8, "out_chan": 8}]]]]},
                "train": {"lr": 0.01, "epochs": 1},
            }
        ),
    )
    done.set_user_attr("dev_wer", 0.5)
    study.tell(done, 0.5)
    df = trials_frame("n", url)
    assert df.loc[df.trial == done.number, "n_layers"].item() == 1
    assert "50.0%" in leaderboard(df)


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
    from search.compare import candidates

    assert sorted(candidates(df)["candidate"]) == sorted(at_1)  # the leaderboard shows each candidate once


@pytest.mark.slow
def test_a_trial_cut_by_the_study_budget_resumes_from_its_checkpoint(workdir):
    from search.study import create_study, run_key

    storage = f"sqlite:///{workdir}/db.sqlite"
    (workdir / "space.yaml").write_text(SPACE.replace("epochs: 2", "epochs: 3"))
    s = settings_from_space("space.yaml", "data", 1, sampler="random", pruner="none", seed=0)
    study = create_study("cut", s, storage)
    from search.objective import Objective
    from search.space import load_space

    objective = Objective(
        space=load_space("space.yaml"),
        data_dir=str(workdir / "data"),
        runs_dir=s.runs_dir,
        run_key=run_key(study),
        max_total_stride=2,
        deadline=0.0,
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


@pytest.mark.slow
def test_rescore_top_three_stores_beam_wer_beside_greedy_and_compare_shows_both(workdir, capsys):
    storage = f"sqlite:///{workdir}/db.sqlite"
    argv = [
        "launch",
        "--space",
        "space.yaml",
        "--data",
        "data",
        "--study",
        "rs",
        "--trials",
        "4",
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--seed",
        "3",
        "--storage",
        storage,
        "--rescore-top",
        "3",
    ]
    assert search_main(argv) == 0
    assert (workdir / "data" / "lm" / "lm.arpa").exists() and (workdir / "data" / "lm" / "lexicon.txt").exists()
    study = optuna.load_study(study_name="rs", storage=storage)
    done = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.values[0])
    beam = {int(k.split("_")[1]): v for k, v in study.user_attrs.items() if k.startswith("rescored_")}
    assert sorted(beam) == sorted(t.number for t in done[:3])  # the three best by greedy dev WER, and only they
    for scores in beam.values():
        assert scores["dev_wer_beam"] >= 0 and scores["test_wer_beam"] >= 0 and "lexicon of" in scores["decoder"]
    df = trials_frame("rs", storage)
    assert (
        df["dev_wer_beam"].notna().sum() == 3 and df.loc[df["trial"] == done[0].number, "test_wer_beam"].notna().all()
    )
    capsys.readouterr()
    assert search_main(["compare", "rs", "--storage", storage, "--out", str(workdir / "report")]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert "dev_wer" in header and "dev_wer_beam" in header and "test_wer_beam" in header
    # resuming rescores nothing twice: what is stored stays
    before = dict(study.user_attrs)
    assert search_main(["resume", "--study", "rs", "--storage", storage]) == 0
    assert {
        k: v
        for k, v in optuna.load_study(study_name="rs", storage=storage).user_attrs.items()
        if k.startswith("rescored_")
    } == {k: v for k, v in before.items() if k.startswith("rescored_")}
