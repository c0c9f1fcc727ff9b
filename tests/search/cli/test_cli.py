"""The stt-search command line as installed: the main job from any folder, and Ctrl-C."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search.cli import main as search_main
from tests.search.conftest import SPACE

SCRIPTS = Path(sys.executable).parent


@pytest.mark.slow
def test_the_demo_runs_from_an_empty_folder_outside_the_checkout(tiny_corpus, tmp_path):
    """The shipped space is package data: found by name, whatever the working folder."""
    data = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, data)
    home = tmp_path / "somewhere" / "else"
    home.mkdir(parents=True)
    checkout = Path(__file__).resolve().parents[2]
    assert not home.resolve().is_relative_to(checkout)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(SCRIPTS / "stt-search"), "demo", "--data", str(data), "--trials", "2", "--epochs", "1"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2/2 trials finished" in proc.stdout and "best config (trial " in proc.stdout
    # one voice: the tool's own lines, no Optuna "[W ...]" warning, no matplotlib or Python warning
    said = proc.stdout + proc.stderr
    assert not [ln for ln in said.splitlines() if ln.startswith(("[W", "[I")) or "Warning" in ln or "matplotlib" in ln]
    assert "dev_wer_beam" in proc.stdout  # the best candidates, beam-decoded with the corpus's own lexicon and LM
    assert (home / "results" / "demo-best.yaml").is_file() and (home / "results" / "studies.db").is_file()
    assert sorted(p.name for p in home.iterdir()) == ["results"]  # everything it wrote is under ./results


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_the_trial_can_be_resumed(tiny_corpus, tmp_path):
    shutil.copytree(tiny_corpus, tmp_path / "data")
    (tmp_path / "space.yaml").write_text(SPACE.replace("epochs: 2", "epochs: 3"))
    cmd = [
        str(SCRIPTS / "stt-search"),
        "launch",
        "--space",
        "space.yaml",
        "--data",
        "data",
        "--study",
        "c",
        "--trials",
        "2",
        "--pruner",
        "none",
    ]
    # its own session, as a terminal's foreground group: Ctrl-C reaches the worker and its trial's child alike.
    # SIGINT back to its default first: under a shell's `cmd &` the suite inherits it ignored, and Python then
    # installs no KeyboardInterrupt handler in the command
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stderr:
        if ": epoch 1 dev WER" in line:  # mid-trial
            os.killpg(proc.pid, signal.SIGINT)
            break
    after = proc.stderr.read()
    assert proc.wait(timeout=300) == 130, after
    assert "Traceback" not in after, after
    lines = [ln for ln in after.splitlines() if ln.strip()]
    assert lines[-1] == (
        "stt-search launch: interrupted; the current trial is checkpointed and waits: any worker or "
        "`stt-search resume` continues it"
    )
    storage = f"sqlite:///{tmp_path}/results/studies.db"
    stopped = optuna.load_study(study_name="c", storage=storage).trials[-1]
    # not failed: the same trial waits for the next worker, and says why
    assert stopped.state == optuna.trial.TrialState.WAITING and stopped.user_attrs["status"] == "interrupted"
    assert stopped.user_attrs["reason"].startswith("SIGINT: its worker stopped after a checkpoint")
    proc = subprocess.run(
        [str(SCRIPTS / "stt-search"), "resume", "--study", "c"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2/2 trials finished" in proc.stdout
    trials = optuna.load_study(study_name="c", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2  # no failed copy: the same trial
    again = trials[stopped.number]
    assert again.user_attrs["resumed"] is True and again.user_attrs["epochs"] == 3
    assert len(again.user_attrs["history"]["dev_wer"]) == 3  # epoch 1, from before the stop, is in its curve


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
