"""Workers: a SIGKILLed worker's trial re-queued and resumed, local workers sharing one study exactly, GPUs
shared out, and a trial whose worker died before naming itself."""

import json
import os
import signal
import subprocess
import sys

import optuna
import pytest

from search.cli import main as search_main
from tests.search.conftest import SEARCH, SPACE, StderrLines, launch_argv


@pytest.mark.slow
def test_sigkilled_worker_is_resumed_from_its_checkpoint(workdir):
    storage = f"sqlite:///{workdir}/db.sqlite"
    space = SPACE.replace("epochs: 2", "epochs: 4").replace("batch_frames: [6000]", "batch_frames: [1500]")
    (workdir / "space.yaml").write_text(space)
    cmd = [*SEARCH, *launch_argv("k", storage, 3, "--sampler", "random", "--pruner", "none", "--seed", "2")]
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
def test_three_local_workers_share_one_sqlite_study_exactly(workdir):
    storage = f"sqlite:///{workdir}/db.sqlite"
    proc = subprocess.run(
        [*SEARCH, *launch_argv("w3", storage, 12, "--seed", "0", "--pruner", "none", "--workers", "3")],
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


def test_workers_spread_over_gpus(monkeypatch):
    from search.workers import worker_devices

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
        *SEARCH,
        *launch_argv("live", storage, 3, "--sampler", "random", "--pruner", "none", "--seed", "5", "--workers", "2"),
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
    from search.storage import open_storage
    from search.workers import requeue_dead_trials

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


def test_a_worker_that_exited_but_is_not_reaped_yet_is_dead():
    """A launch with --workers N waits for its workers in order, so a SIGKILLed one stays a zombie until the ones
    before it finish: judged alive, its trial waited for the stale heartbeat (2 minutes) instead of a moment."""
    from search.workers import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, and left unreaped
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
    assert pid_alive(os.getpid())


@pytest.mark.slow
def test_a_worker_stopped_past_its_heartbeat_hands_its_trial_over_and_nothing_trains_twice(workdir, postgres):
    """SIGSTOP a worker (its whole process group, as Ctrl-Z does) until a second worker has taken its trial over
    and waits for the run directory; SIGCONT: the first stops after its checkpoint, the second continues from
    it, the study meets its target, and every epoch of the candidate is trained once."""
    storage = postgres.url
    (workdir / "space.yaml").write_text(SPACE.replace("epochs: 2", "epochs: 4").replace("[6000]", "[1500]"))
    first = subprocess.Popen(
        [*SEARCH, *launch_argv("sigstop", storage, 2, "--sampler", "random", "--pruner", "none", "--heartbeat", "1")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    first_log = StderrLines(first, "trial 0: epoch 1 dev WER")  # its child holds the run directory and a checkpoint
    assert first_log.seen.wait(timeout=300), first_log.text()[-3000:]
    while True:  # the worker and its training child; not inside a transaction, whose row locks would stall all
        os.killpg(first.pid, signal.SIGSTOP)
        if postgres.in_transaction() == 0:
            break
        os.killpg(first.pid, signal.SIGCONT)
    second = subprocess.Popen(
        [*SEARCH, "worker", "--study", "sigstop", "--storage", storage],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second_log = StderrLines(second, "waiting for it to let go")  # its copy of trial 0 found the run directory busy
    try:
        assert second_log.seen.wait(timeout=300), second_log.text()[-3000:]
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.wait(timeout=300) == 0, second_log.text()[-3000:]
    assert first.wait(timeout=300) == 0, first_log.text()[-3000:]
    logs = first_log.text() + second_log.text()
    assert "taken over by another worker" in first_log.text() and "Traceback" not in logs, logs[-4000:]

    study = optuna.load_study(study_name="sigstop", storage=storage)
    trials = study.trials
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 2 and all(t.state.name == "COMPLETE" for t in counted), [
        (t.number, t.state.name, t.user_attrs.get("status")) for t in trials
    ]
    assert trials[0].state.name == "FAIL"
    copy = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(copy) == 1 and copy[0] in counted and copy[0].user_attrs["resumed"] is True
    assert copy[0].user_attrs["worker"] != trials[0].user_attrs["worker"] and copy[0].user_attrs["epochs"] == 4
    hashes = [t.user_attrs["config_hash"] for t in counted]
    assert len(set(hashes)) == 2, "a config was trained twice"
    run_dir = workdir / "results" / "runs" / copy[0].user_attrs["run_dir"]
    epochs = [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4], epochs  # each epoch once: the copy continued the first worker's last checkpoint
    assert not list((workdir / "results" / "runs").rglob(".lock"))
