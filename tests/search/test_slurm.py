"""Workers as Slurm job arrays on a real single-node cluster (tests.search.slurm_cluster): a study shared by an
array, a cancelled task, a task warned before its time limit, and no secret anywhere it should not be."""

import contextlib
import json
import os
import secrets
import subprocess
from pathlib import Path

import optuna
import pytest

from search.cli import main as search_main
from search.storage import STORAGE_ENV, open_storage
from tests.search.conftest import SEARCH, StderrLines

pytestmark = pytest.mark.slow
WAIT = 300  # seconds an array may take on 2 cores


def _study(workdir, name, storage, trials, epochs):
    """``stt-search launch --create-only``: the study, checked and created, nothing trained."""
    space = (workdir / "space.yaml").read_text().replace("epochs: 2", f"epochs: {epochs}")
    (workdir / f"{name}.yaml").write_text(space)
    flags = ["--trials", str(trials), "--pruner", "none", "--seed", "0", "--storage", storage, "--create-only"]
    assert search_main(["launch", "--space", f"{name}.yaml", "--data", "data", "--study", name, *flags]) == 0
    assert not _trials(storage, name)


def _submit(slurm, workdir, study, storage, workers, *flags, env=None):
    """``stt-search slurm --study S --workers N``; the storage URL in the environment. Returns the array's id."""
    env = {**slurm.env, STORAGE_ENV: storage, **(env or {})}
    out = subprocess.run(
        [*SEARCH, "slurm", "--study", study, "--workers", str(workers), *flags],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split("submitted job array ")[1].split()[0]


def _trials(storage, study):
    return optuna.load_study(study_name=study, storage=open_storage(storage)).trials


@contextlib.contextmanager
def _watching(workdir, study, job, tasks, when):
    """Follow the array's task logs as they are written (``tail -F``: they may not exist yet); ``seen`` is set
    when a line holding ``when`` arrives."""
    names = [f"{job}_{i}_0_log.err" for i in range(tasks)] if tasks > 1 else [f"{job}_0_log.err"]  # one: no array
    logs = [str(workdir / "results" / "slurm" / study / name) for name in names]
    tail = subprocess.Popen(
        ["tail", "-q", "-n", "+1", "-F", *logs], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        yield StderrLines(tail, when, stream=tail.stdout)
    finally:
        tail.terminate()
        tail.wait()


def _logs(workdir, study) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((workdir / "results" / "slurm" / study).glob("*.err")))


def _no_config_twice(trials):
    trained = [t.user_attrs["config_hash"] for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(trained) == len(set(trained)), "a config was trained twice"


def test_a_three_task_array_shares_a_six_trial_journal_study(slurm, workdir):
    storage = "journal:///studies.log"  # a journal file on the (here: local) shared file system
    _study(workdir, "arr", storage, 6, 2)
    job = _submit(slurm, workdir, "arr", storage, 3)
    slurm.wait_gone(job, WAIT)
    trials = _trials(storage, "arr")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6, _logs(workdir, "arr")[-3000:]
    assert {t.user_attrs["slurm_task"] for t in trials} == {f"{job}_{i}" for i in range(3)}  # all three took part
    _no_config_twice(trials)
    status = subprocess.run(
        [*SEARCH, "slurm", "status", "--study", "arr"],
        cwd=workdir,
        env={**slurm.env, STORAGE_ENV: storage},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "study 'arr': 6/6 trials finished" in status.stdout, status.stderr


def _training(storage, study):
    """A RUNNING trial that has reported an epoch (and names the task it runs in)."""
    running = [t for t in _trials(storage, study) if t.state.name == "RUNNING" and t.intermediate_values]
    assert running and "slurm_task" in running[0].user_attrs, running
    return running[0]


def test_a_cancelled_task_s_trial_is_finished_by_another_task_from_its_checkpoint(slurm, workdir):
    storage = "journal:///studies.log"
    _study(workdir, "cut", storage, 4, 8)
    job = _submit(slurm, workdir, "cut", storage, 2)
    with _watching(workdir, "cut", job, 2, ": epoch 2 dev WER") as log:  # epoch 1 is reported by then
        assert log.seen.wait(WAIT), log.lines
        victim = _training(storage, "cut")
    task = victim.user_attrs["slurm_task"]
    slurm.run("scancel", task)  # SIGTERM to the task's processes: the trial checkpoints and waits
    slurm.wait_gone(job, WAIT)
    trials = _trials(storage, "cut")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4, _logs(workdir, "cut")[-3000:]
    again = trials[victim.number]  # the same trial, not a failed one and a copy
    assert again.user_attrs["slurm_task"] != task and again.user_attrs["resumed"] is True
    assert again.user_attrs["epochs"] == 8 and len(again.user_attrs["history"]["dev_loss"]) == 8
    assert sorted(again.intermediate_values) == list(range(1, 9))  # one curve: the epochs before the cut, then on
    _no_config_twice(trials)
    assert "SIGTERM: its worker stopped after a checkpoint" in _logs(workdir, "cut")


def test_a_task_warned_before_its_time_limit_requeues_itself_and_its_trial_continues(slurm, workdir):
    storage = "journal:///studies.log"
    _study(workdir, "warned", storage, 1, 20)
    job = _submit(slurm, workdir, "warned", storage, 1, "--signal-delay", "60")
    with _watching(workdir, "warned", job, 1, ": epoch 2 dev WER") as log:
        assert log.seen.wait(WAIT), log.lines
        victim = _training(storage, "warned")
    # what Slurm sends --signal-delay seconds before the limit (sbatch --signal=USR2@60), sent now
    with _watching(workdir, "warned", job, 1, "requeueing it") as log:
        slurm.run("scancel", "--signal=USR2", victim.user_attrs["slurm_task"])
        assert log.seen.wait(WAIT), log.lines
    slurm.wait_gone(job, WAIT)  # a requeued task has not ended: this waits for the run after the requeue
    assert "Restarts=1" in slurm.run("scontrol", "show", "job", job)
    (t,) = _trials(storage, "warned")  # the one trial: never failed, never copied
    logs = _logs(workdir, "warned")
    assert t.state.name == "COMPLETE", logs[-3000:]
    assert "SIGUSR2: its worker stopped after a checkpoint" in logs and "requeueing it" in logs
    stopped_at = max(victim.intermediate_values)
    assert t.user_attrs["resumed"] is True and t.user_attrs["epochs"] == 20
    assert sorted(t.intermediate_values) == list(range(1, 21)) and stopped_at < 20  # continued, not restarted
    logged = [ln for ln in logs.splitlines() if "dev WER" in ln and "trial 0: epoch" in ln]
    epochs = [int(ln.split("epoch ")[1].split()[0]) for ln in logged]
    # each epoch trained once, before or after the requeue (the one that ended as the signal came may go unlogged)
    assert epochs == sorted(set(epochs)) and epochs[-1] == 20, epochs
    assert "Traceback" not in logs, logs[-3000:]


def _cmdlines() -> list[bytes]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out.append((proc / "cmdline").read_bytes())
            except OSError:
                continue  # it exited meanwhile
    return out


def test_a_password_given_through_the_environment_appears_nowhere(slurm, postgres, workdir):
    """stt-search worker, worker --workers 2 and a Slurm task, the URL in $STT_SEARCH_STORAGE: the password is in
    no process's command line (looked at while each trains), no log line, no user attribute, no file."""
    password = secrets.token_hex(12)
    storage = postgres.password_role("keeper", password)
    for name, trials in (("one", 1), ("two", 2), ("task", 1)):
        _study(workdir, name, storage, trials, 12)
    env = {**os.environ, STORAGE_ENV: storage}
    seen = []
    for study, extra in (("one", []), ("two", ["--workers", "2"])):
        proc = subprocess.Popen(
            [*SEARCH, "worker", "--study", study, *extra],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = StderrLines(proc, "training in process")
        assert lines.seen.wait(WAIT), lines.text()
        seen += _cmdlines()
        out, _ = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, lines.text()[-3000:]
        seen.append((out + lines.text()).encode())
    job = _submit(slurm, workdir, "task", storage, 1)
    with _watching(workdir, "task", job, 1, "training in process") as log:
        assert log.seen.wait(WAIT), log.lines
        seen += _cmdlines()
    slurm.wait_gone(job, WAIT)
    secret = password.encode()
    assert not [c for c in seen if secret in c]  # command lines and the commands' output
    for study, trials in (("one", 1), ("two", 2), ("task", 1)):
        loaded = optuna.load_study(study_name=study, storage=open_storage(storage))
        assert sum(t.state.name == "COMPLETE" for t in loaded.trials) == trials
        attrs = [loaded.user_attrs] + [t.user_attrs for t in loaded.trials]
        assert password not in json.dumps(attrs)
    files = [p for p in workdir.rglob("*") if p.is_file()]  # runs, Slurm logs and submitit's pickles among them
    assert any(p.name == "best.pt" for p in files) and any(p.suffix == ".pkl" for p in files)
    assert not [p for p in files if secret in p.read_bytes()]
