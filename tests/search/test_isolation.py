"""A trial in a child process: a killed child fails its trial alone, and one process trains in a run directory."""

import signal
import subprocess

import optuna
import pytest

from tests.search.conftest import SEARCH, launch_argv


@pytest.mark.slow
def test_a_killed_training_process_fails_its_trial_and_the_worker_goes_on(workdir):
    import os

    storage = f"sqlite:///{workdir}/db.sqlite"
    cmd = [*SEARCH, *launch_argv("c", storage, 3, "--sampler", "random", "--pruner", "none", "--seed", "4")]
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


def test_a_run_directory_is_trained_in_by_one_process_at_a_time(tmp_path):
    from stt.train.run import RunDirBusy, hold_run_dir

    busy = r"run directory .*run is in use by another training process \(.*:\d+\)"
    with hold_run_dir(tmp_path / "run"), pytest.raises(RunDirBusy, match=busy), hold_run_dir(tmp_path / "run"):
        pass
    with hold_run_dir(tmp_path / "run"):  # released when its holder is done
        pass
