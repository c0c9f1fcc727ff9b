"""SIGKILL at a random moment, then the next command: it must resume or redo the work, never misread a file.

    python bench/kill_recovery.py [--tries 20] [--what train,prepare,launch,sigstop,concurrent] [--seed 0]

For each command, each try starts it on a tiny corpus, kills it (SIGKILL, the process group: the
trial's child process too) after a random delay between 0 and the command's own unkilled wall time,
then runs what a user would run next and checks the outcome:

* ``stt train``: the same command with ``--resume`` finishes every epoch; result.json and best.pt read back.
* ``stt prepare features``: the same command again completes the cache, and every utterance's features
  equal those of an unkilled run, bit for bit.
* ``stt-search launch``: ``stt-search resume``, or the same launch when resume says the study never
  came to exist; the study then has exactly its target of finished trials, no config trained twice,
  and every finished trial's config and metrics.

Two more modes (``--what sigstop,concurrent``) stop instead of kill:

* ``sigstop``: a worker's process group is SIGSTOPped at a random moment of its study (heartbeat 1 s), a
  second worker joins, and the first gets SIGCONT once the second waits for its run directory (or is done).
  Both must exit 0 without a traceback; the study meets its target, no config trains twice, every finished
  candidate's metrics.jsonl holds each epoch once, and no lock file is left.
* ``concurrent``: two launches of one new study, the second a random moment (up to 0.25 s) after the first: one
  runs the study to its target, the other exits 2 with one line saying the name is taken.

It prints one row per command: tries, how many the next command resumed / redid / found done, and
failures (each with its output). Exit status 1 if any try failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN = """
frontend: fbank
train: {epochs: 100, lr: 0.005, batch_frames: 3000, seed: 0}  # long enough that most kills land mid-training
model:
  layers:
    - - - [conv_block, {in_chan: 32, out_chan: 32, kernel: 5, stride: 2}]
    - - - [separable_conv_block, {out_chan: 32, kernel: 5}]
"""

SPACE = """
frontend: fbank
width: [16, 24]
layers: {low: 1, high: 2}
layer: {stride: [1, 2], branches: 1, d_ff: [1]}
branch:
  {type: [conv_block, separable_conv_block], kernel: [3, 5], dilation: [1], glu: [false], heads: [2], dropout: 0.0}
train: {epochs: 1, batch_frames: [3000]}
"""

SPACE3 = "space3.yaml"  # the stopped worker's space: 3 epochs a candidate, so that a stop often lands mid-trial
STT = [sys.executable, "-m", "stt.cli"]
SEARCH = [sys.executable, "-m", "search.cli"]


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)


def killed_at(cmd, delay: float, **kw) -> bool:
    """Start ``cmd`` in its own process group and SIGKILL the group after ``delay`` s; False if it finished first."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)
    try:
        p.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return True


def timed(cmd, **kw) -> float:
    t0 = time.time()
    r = run(cmd, **kw)
    if r.returncode != 0:
        sys.exit(f"unkilled run failed: {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    return time.time() - t0


# --- stt train -----------------------------------------------------------------------------


def try_train(tmp: Path, data: Path, i: int, delay: float) -> str:
    out = tmp / f"train_{i}"
    cmd = [
        *STT,
        "train",
        "--config",
        str(tmp / "run.yaml"),
        "--data",
        str(data),
        "--out",
        str(out),
        "--checkpoint-every",
        "2",
    ]
    if not killed_at(cmd, delay):
        return "finished before the kill"
    r = run([*cmd, "--resume"])
    if r.returncode != 0:
        raise AssertionError(f"--resume after the kill failed:\n{r.stderr[-1500:]}")
    result = json.loads((out / "result.json").read_text())
    if result["status"] != "completed" or result["epochs"] != 100:
        raise AssertionError(f"result after resume: {result['status']}, {result['epochs']} epochs")
    from stt.core.checkpoint import load_checkpoint

    load_checkpoint(out / "best.pt", keys=("model",))
    return "resumed" if "resuming" in r.stderr else "redone"


# --- stt prepare features --------------------------------------------------------------------


def _features(data: Path, complete: bool = True) -> dict:
    """Every utterance's features, read through the same check a command makes (the cache must be complete)."""
    from stt.data.corpus import find_splits
    from stt.data.features import FeatureCache, prepare_split

    feats = {}
    for split in sorted(find_splits(data)):
        rep = prepare_split(data, split, "fbank", progress=False)
        if complete and rep.computed:
            raise AssertionError(
                f"{split}: the cache was reported complete but {rep.computed} utterances were recomputed"
            )
        c = FeatureCache(rep.cache_dir)
        feats.update({(split, u["id"]): c.features(k).copy() for k, u in enumerate(c.utterances)})
    return feats


def try_prepare(tmp: Path, audio: Path, reference: dict, i: int, delay: float) -> str:
    import numpy as np

    data = tmp / f"prepare_{i}"
    shutil.copytree(audio, data)
    cmd = [*STT, "prepare", "features", "--data", str(data), "--quiet"]
    if not killed_at(cmd, delay):
        return "finished before the kill"
    r = run(cmd)
    if r.returncode != 0:
        raise AssertionError(f"prepare after the kill failed:\n{r.stderr[-1500:]}")
    got = _features(data)
    if got.keys() != reference.keys():
        raise AssertionError(f"{len(got)} utterances cached, {len(reference)} expected")
    bad = [k for k in got if not np.array_equal(got[k], reference[k])]
    if bad:
        raise AssertionError(f"{len(bad)} utterances differ from an unkilled run, e.g. {bad[0]}")
    shutil.rmtree(data)
    return "redone" if "(computed)" in r.stdout else "done"


# --- stt-search launch -----------------------------------------------------------------------


def try_launch(tmp: Path, data: Path, i: int, delay: float) -> str:
    import collections

    import optuna

    from search.storage import open_storage

    db = f"sqlite:///{tmp}/launch_{i}.db"
    launch = _launch_cmd(tmp, data, db, tmp / f"runs_{i}", "--seed", str(abs(hash(str(i))) % 1000))
    if not killed_at(launch, delay):
        return "finished before the kill"
    r = run([*SEARCH, "resume", "--study", "k", "--storage", db, "--runs-dir", str(tmp / f"runs_{i}")])
    how = "resumed"
    if r.returncode == 2 and (
        "no such file" in r.stderr
        or "no study 'k'" in r.stderr
        or "launch again" in r.stderr
        or "the same `stt-search launch`" in r.stderr
    ):
        r, how = run(launch), "redone"
    if r.returncode != 0:
        raise AssertionError(f"the command after the kill ({how}) failed:\n{r.stderr[-1500:]}")
    trials = optuna.load_study(study_name="k", storage=open_storage(db)).trials
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    if len(counted) != 2:
        raise AssertionError(f"{len(counted)} finished trials, target 2: {[(t.number, t.state.name) for t in trials]}")
    hashes = collections.Counter(t.user_attrs["config_hash"] for t in counted if "duplicate_of" not in t.user_attrs)
    if any(n > 1 for n in hashes.values()):
        raise AssertionError("a config was trained twice")
    for t in counted:
        json.loads(t.user_attrs["config"])
        if t.user_attrs.get("dev_wer") is None:
            raise AssertionError(f"trial {t.number} has no dev_wer")
    return how


# --- a stopped worker, and two launches at once ---------------------------------------------------


def _launch_cmd(tmp: Path, data: Path, db: str, runs: Path, *extra: str, space: str = "space.yaml") -> list[str]:
    return [
        *SEARCH,
        "launch",
        "--space",
        str(tmp / space),
        "--data",
        str(data),
        "--study",
        "k",
        "--trials",
        "2",
        "--pruner",
        "none",
        "--storage",
        db,
        "--runs-dir",
        str(runs),
        *extra,
    ]


def _check_study(db: str, runs: Path, epochs: int | None = None) -> None:
    """The study met its target of 2, no config trained twice, every finished candidate's epochs trained once."""
    import collections

    import optuna

    from search.storage import open_storage

    trials = optuna.load_study(study_name="k", storage=open_storage(db)).trials
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    if len(counted) != 2:
        states = [(t.number, t.state.name, t.user_attrs.get("status")) for t in trials]
        raise AssertionError(f"{len(counted)} finished trials, target 2: {states}")
    hashes = collections.Counter(t.user_attrs["config_hash"] for t in counted if "duplicate_of" not in t.user_attrs)
    if any(n > 1 for n in hashes.values()):
        raise AssertionError("a config was trained twice")
    for t in counted:
        if t.user_attrs.get("dev_wer") is None:
            raise AssertionError(f"trial {t.number} has no dev_wer")
        if epochs is not None and "duplicate_of" not in t.user_attrs:
            lines = (runs / t.user_attrs["run_dir"] / "metrics.jsonl").read_text().splitlines()
            trained = [json.loads(x)["epoch"] for x in lines]
            if trained != list(range(1, epochs + 1)):
                raise AssertionError(f"trial {t.number} trained epochs {trained}, not each of 1..{epochs} once")
    if list(runs.rglob(".lock")):
        raise AssertionError(f"lock files left: {list(runs.rglob('.lock'))}")


def try_sigstop(tmp: Path, data: Path, i, delay: float) -> str:
    """SIGSTOP a worker's process group ``delay`` s into its study, start a second worker, SIGCONT the first once
    the second waits for the first's run directory (or is done); both must end well and nothing train twice."""
    import threading

    db, runs = f"sqlite:///{tmp}/stop_{i}.db", tmp / f"stop_runs_{i}"
    first = subprocess.Popen(
        _launch_cmd(tmp, data, db, runs, "--heartbeat", "1", "--seed", str(abs(hash(str(i))) % 1000), space=SPACE3),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    first_err = []
    for line in first.stderr:  # the study exists and the worker asks for trials: from here the delay runs
        first_err.append(line)
        if "trials finished, max total stride" in line:
            break
    drain = threading.Thread(target=lambda: first_err.extend(first.stderr), daemon=True)
    drain.start()
    try:
        first.wait(timeout=delay)
        return "finished before the stop"
    except subprocess.TimeoutExpired:
        pass
    os.killpg(first.pid, signal.SIGSTOP)
    how = "second worker finished alone"
    try:
        second = subprocess.Popen(
            [*SEARCH, "worker", "--study", "k", "--storage", db, "--runs-dir", str(runs)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        second_err = []
        for line in second.stderr:
            second_err.append(line)
            if "waiting for it to let go" in line:
                how = "second waited for the run directory"
                break
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    second_err += second.stderr.readlines()
    codes = second.wait(timeout=900), first.wait(timeout=900)
    drain.join(timeout=60)
    text = "".join(first_err) + "".join(second_err)
    if codes != (0, 0) or "Traceback" in text:
        raise AssertionError(f"exit codes {codes}:\n{text[-2500:]}")
    _check_study(db, runs, epochs=3)
    return how + (", first saw its trial taken over" if "taken over by another worker" in text else "")


def try_concurrent(tmp: Path, data: Path, i, delay: float) -> str:
    """Two launches of one new study, the second started ``delay`` s after the first: one creates and runs it,
    the other says in one line that the name is taken; the study meets its target."""
    db, runs = f"sqlite:///{tmp}/both_{i}.db", tmp / f"both_runs_{i}"
    cmd = _launch_cmd(tmp, data, db, runs)
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    time.sleep(delay)  # the bench's random moment (not a test's synchronisation)
    procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=900)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    if codes != [0, 2]:
        raise AssertionError(f"exit codes {[p.returncode for p in procs]}:\n{errs[0][-1500:]}\n{errs[1][-1500:]}")
    loser = errs[[p.returncode for p in procs].index(2)].strip().splitlines()[-1]
    if "Traceback" in "".join(errs) or not re.search(
        r"launch: error: study 'k' (already exists|was created meanwhile)", loser
    ):
        raise AssertionError(f"the second launch's last line: {loser}")
    _check_study(db, runs)
    if "meanwhile" in loser:
        return "second refused: the storage's create lost the race"
    if "just now" in loser:
        return "second refused after waiting for the first's creation"
    return "second refused: the name was already taken when it looked"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tries", type=int, default=20)
    p.add_argument("--what", default="train,prepare,launch")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        from stt.data.synth import SynthSettings, prepare_synth

        data = tmp / "data"  # train and launch: a tiny corpus, so that a run is mostly training, not start-up
        prepare_synth(
            data, SynthSettings(hours=0.012, vocab=30, seed=3, min_words=2, max_words=5), workers=2, progress=False
        )
        audio = tmp / "audio"  # prepare: more audio, so that computing features is a good part of its time
        prepare_synth(
            audio, SynthSettings(hours=0.06, vocab=30, seed=4, min_words=2, max_words=5), workers=2, progress=False
        )
        (tmp / "run.yaml").write_text(RUN)
        (tmp / "space.yaml").write_text(SPACE)
        (tmp / SPACE3).write_text(SPACE.replace("epochs: 1,", "epochs: 3,"))
        _features(data, complete=False)  # prepares the shared cache: train and launch read it
        reference = _features(audio, complete=False) if "prepare" in args.what else {}
        shutil.rmtree(audio / ".stt-cache", ignore_errors=True)  # each prepare try starts from audio only
        for what in args.what.split(","):
            if what == "train":
                full = timed(
                    [
                        *STT,
                        "train",
                        "--config",
                        str(tmp / "run.yaml"),
                        "--data",
                        str(data),
                        "--out",
                        str(tmp / "ref_run"),
                    ]
                )
                go = lambda i, d: try_train(tmp, data, i, d)  # noqa: E731
            elif what == "prepare":
                ref = tmp / "ref_prepare"
                shutil.copytree(audio, ref)
                full = timed([*STT, "prepare", "features", "--data", str(ref), "--quiet"])
                go = lambda i, d: try_prepare(tmp, audio, reference, i, d)  # noqa: E731
            elif what == "launch":
                full = timed(
                    [
                        *SEARCH,
                        "launch",
                        "--space",
                        str(tmp / "space.yaml"),
                        "--data",
                        str(data),
                        "--study",
                        "ref",
                        "--trials",
                        "2",
                        "--pruner",
                        "none",
                        "--storage",
                        f"sqlite:///{tmp}/ref.db",
                        "--runs-dir",
                        str(tmp / "ref_runs"),
                    ]
                )
                go = lambda i, d: try_launch(tmp, data, i, d)  # noqa: E731
            elif what in ("sigstop", "concurrent"):
                space = SPACE3 if what == "sigstop" else "space.yaml"
                full = timed(_launch_cmd(tmp, data, f"sqlite:///{tmp}/ref_{what}.db", tmp / f"ref_{what}", space=space))
                if what == "concurrent":  # the second launch starts while the first checks and creates the study
                    full = min(full, 0.25)
                try_ = try_sigstop if what == "sigstop" else try_concurrent
                go = lambda i, d, try_=try_: try_(tmp, data, i, d)  # noqa: E731
            else:
                sys.exit(f"--what: {what!r} is not one of train, prepare, launch, sigstop, concurrent")
            outcomes, failures = {}, []
            for i in range(args.tries):
                delay = rng.uniform(0.0, full)
                try:
                    how = go(i, delay)
                    while how in (
                        "finished before the kill",
                        "finished before the stop",
                    ):  # it ran faster than the unkilled run: kill sooner
                        delay = rng.uniform(0.0, delay)
                        how = go(f"{i}b{delay:.3f}", delay)
                except AssertionError as e:
                    how = "FAILED"
                    failures.append(f"try {i} (killed at {delay:.2f} s): {e}")
                outcomes[how] = outcomes.get(how, 0) + 1
                verb = {"sigstop": "stopped", "concurrent": "second launch"}.get(what, "killed")
                print(f"{what} try {i}: {verb} at {delay:.2f} s of {full:.1f} s -> {how}", flush=True)
            rows.append((what, full, outcomes, failures))
    print(f"\n{'command':8s} {'unkilled s':>10s} {'tries':>6s}  outcomes of the next command")
    for what, full, outcomes, failures in rows:
        print(
            f"{what:8s} {full:10.1f} {sum(outcomes.values()):6d}  "
            + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
        )
        for f in failures:
            print(f"  {f}")
    sys.exit(1 if any(f for *_, f in rows) else 0)


if __name__ == "__main__":
    main()
