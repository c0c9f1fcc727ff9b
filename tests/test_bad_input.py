"""Bad input at both command lines: one line naming what is wrong, exit status 2, and nothing changed.

Each row is a command run against a shared world (a prepared corpus, a trained run, study databases)
with one bad file or flag. A row passes when the command exits 2, its last stderr line is the expected
one-line message (no traceback), no file in the world or the working folder changed or appeared, and
no planted payload ran. Full-disk and read-only rows use a tiny tmpfs (root only: CI runs as root);
they may leave the folders they were asked to create, but never a temporary or half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch

from search.cli import main as search_main
from search.settings import settings_from_space
from search.storage import open_storage
from search.study import create_study
from stt.cli import main as stt_main
from stt.core.checkpoint import load_checkpoint
from stt.train.run_config import load_run_config

TINY_RUN = """
frontend: fbank
train: {epochs: 1, lr: 0.005, batch_frames: 3000, seed: 0}
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
branch: {type: [conv_block], kernel: [3, 5], dilation: [1], glu: [false], heads: [2], dropout: 0.0}
train: {epochs: 1, batch_frames: [3000]}
"""


class Payload:
    """Pickles into a call of os.system: what a malicious checkpoint runs on an unsafe torch.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def world(tiny_corpus, tmp_path_factory):
    w = tmp_path_factory.mktemp("world")
    shutil.copytree(tiny_corpus, w / "data")
    (w / "run.yaml").write_text(TINY_RUN)
    (w / "space.yaml").write_text(SPACE)
    assert stt_main(["train", "--config", str(w / "run.yaml"), "--data", str(w / "data"), "--out", str(w / "run")]) == 0
    marker = w / "PAYLOAD_RAN"

    def variant(name: str, file: str, content: bytes | None = None, obj=None):
        d = w / name
        shutil.copytree(w / "run", d)
        if obj is not None:
            torch.save(obj, d / file)
        else:
            (d / file).write_bytes(content)

    good = torch.load(w / "run" / "best.pt", weights_only=True)
    variant("evil_run", "best.pt", obj={**good, "model": Payload(marker)})
    variant("evil_last", "last.pt", obj={"model": Payload(marker), "optimizer": {}, "scheduler": {}, "state": {}})
    raw = (w / "run" / "best.pt").read_bytes()
    variant("truncated_run", "best.pt", content=raw[: len(raw) // 2])
    variant("random_run", "best.pt", content=os.urandom(len(raw)))
    torch.save({"args": Payload(marker), "model": {}}, w / "evil_wav2vec.pt")
    (w / "residual.yaml").write_text(TINY_RUN.replace("model:\n", 'model:\n  residual: "false"\n'))
    (w / "epochs.yaml").write_text(TINY_RUN.replace("epochs: 1", "epochs: ten"))
    (w / "unknown.yaml").write_text(TINY_RUN.replace("epochs: 1", "epoch: 1"))
    (w / "stride.yaml").write_text(TINY_RUN.replace("stride: 2", "stride: 64"))
    (w / "bad_space.yaml").write_text(SPACE.replace("kernel: [3, 5]", "kernel: [3, five]"))
    (w / "w2v_space.yaml").write_text(SPACE.replace("frontend: fbank", f"frontend: wav2vec:{w / 'missing_wav2vec.pt'}"))
    (w / "latin1.yaml").write_bytes(TINY_RUN.encode() + b"# caf\xe9\n")  # Latin-1, not UTF-8
    (w / "latin1_space.yaml").write_bytes(SPACE.encode() + b"# caf\xe9\n")
    (w / "folder.yaml").mkdir()  # a folder where a file belongs
    shutil.copyfile(next((w / "data" / "test").rglob("*.flac")), w / "one.flac")
    variant("tuned_run", "decoder.json", content=b'{"lm_weight": "high", "word_score": 0.5}')
    (w / "bad_lexicon.txt").write_text("the t h e\ncafé c a f é\n")  # line 2: a letter the model does not have
    (w / "not_arpa.arpa").write_text("this is not\na language model\n")
    (w / "cyrillic.arpa").write_text(
        "\\data\\\nngram 1=3\nngram 2=0\n\n\\1-grams:\n-1.0\t<s>\t0\n-1.0\t</s>\t0\n"
        "-1.0\tпривет\t0\n\n\\2-grams:\n\n\\end\\\n"
    )
    (w / "not_synth").mkdir()
    (w / "not_synth" / "notes.txt").write_text("mine")

    # studies: one empty, one whose only trial names a run_dir outside the runs root (never read: a trial's folder
    # is derived from this host's runs root), one whose best.pt (where the host's root puts it) is evil
    db = f"sqlite:///{w}/studies.db"
    create_study("empty", settings_from_space(str(w / "space.yaml"), str(w / "data"), 1, runs_dir=str(w / "runs")), db)
    storage = open_storage(db)
    config = json.dumps(load_run_config(TINY_RUN).to_dict())
    for name, run_dir in (("escape", "../../../../../etc"), ("evilweights", "evil_run")):
        study = optuna.create_study(study_name=name, storage=storage)
        study.set_user_attr("runs_dir", str(w))
        study.add_trial(
            optuna.trial.create_trial(
                value=0.5, user_attrs={"config": config, "run_dir": run_dir, "dev_wer": 0.5, "params": 1}
            )
        )
    (w / "evilweights" / "trial_0").mkdir(parents=True)
    shutil.copyfile(w / "evil_run" / "best.pt", w / "evilweights" / "trial_0" / "best.pt")
    storage.engine.dispose()
    with contextlib.closing(sqlite3.connect(w / "studies.db")) as con:  # all in the main file: reads change nothing
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (w / "cwd").mkdir()
    return w


@dataclass
class Row:
    id: str
    argv: str  # "stt ..." or "stt-search ...", {w} is the world folder
    message: str  # regex the one stderr line must match
    hidden: tuple[str, ...] = ()  # strings that must not appear anywhere in the output (passwords)
    prepare: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    disk: str | None = None  # "full" or "readonly": the command writes into a tmpfs at {w}/mnt


def _fast_retries(w, mp):
    mp.setattr("search.storage.RETRY_DELAYS", (0.01, 0.01))


ROWS = [
    # malicious pickles: refused, and the payload never runs
    Row(
        "eval-malicious-best",
        "stt eval --checkpoint {w}/evil_run --data {w}/data",
        r"evil_run/best\.pt: refused to load: it would call posix\.system",
    ),
    Row(
        "transcribe-malicious-best",
        "stt transcribe --checkpoint {w}/evil_run {w}/data/test",
        r"evil_run/best\.pt: refused to load: it would call posix\.system",
    ),
    Row(
        "resume-malicious-last",
        "stt train --config {w}/run.yaml --data {w}/data --out {w}/evil_last --resume",
        r"evil_last/last\.pt: refused to load: it would call posix\.system",
    ),
    Row(
        "wav2vec-malicious",
        "stt prepare features --data {w}/data --frontend wav2vec:{w}/evil_wav2vec.pt",
        r"evil_wav2vec\.pt: refused to load: it would call posix\.system",
    ),
    Row(
        "export-malicious-weights",
        "stt-search export --study evilweights --storage sqlite:///{w}/studies.db -o {w}/x.yaml --weights "
        "--runs-dir {w}",
        r"evilweights/trial_0/best\.pt: refused to load: it would call posix\.system",
    ),
    # damaged checkpoints and run directories
    Row(
        "eval-truncated",
        "stt eval --checkpoint {w}/truncated_run --data {w}/data",
        r"truncated_run/best\.pt: not a readable checkpoint",
    ),
    Row(
        "eval-random-bytes",
        "stt eval --checkpoint {w}/random_run --data {w}/data",
        r"random_run/best\.pt: not a readable checkpoint",
    ),
    Row("eval-no-run-dir", "stt eval --checkpoint {w}/nope --data {w}/data", r"nope: no such run directory"),
    Row(
        "eval-not-a-run",
        "stt eval --checkpoint {w}/data --data {w}/data",
        r"data: not a trained run directory \(missing config\.yaml\)",
    ),
    # decoding: lexicons and LMs that do not fit the model
    Row(
        "eval-lexicon-foreign-letter",
        "stt eval --checkpoint {w}/run --data {w}/data --decoder beam --lexicon {w}/bad_lexicon.txt",
        r"bad_lexicon\.txt:2: word 'café': symbol 'é' is not in the model's alphabet",
    ),
    Row(
        "eval-lm-not-arpa",
        "stt eval --checkpoint {w}/run --data {w}/data --decoder beam --lm {w}/not_arpa.arpa --lexicon auto",
        r"not_arpa\.arpa:1: not an ARPA language model \(expected '\\data\\' first",
    ),
    Row(
        "eval-lm-other-alphabet",
        "stt eval --checkpoint {w}/run --data {w}/data --decoder beam --lm {w}/cyrillic.arpa --lexicon auto",
        r"cyrillic\.arpa:8: LM word 'привет' has .*outside the model's alphabet",
    ),
    Row(
        "transcribe-lm-missing",
        "stt transcribe --checkpoint {w}/run {w}/data/test --decoder beam --lm {w}/nope.arpa",
        r"nope\.arpa: language model not found",
    ),
    Row(
        "eval-lm-without-beam",
        "stt eval --checkpoint {w}/run --data {w}/data --lm {w}/cyrillic.arpa",
        r"--lm is a beam-search option: add --decoder beam",
    ),
    Row("lm-build-missing-data", "stt lm build --data {w}/nodata", r"nodata: no such data folder"),
    # data
    Row(
        "eval-unknown-split",
        "stt eval --checkpoint {w}/run --data {w}/data --split nosuch",
        r"split 'nosuch' not found; available: dev, test, train",
    ),
    Row("eval-missing-data", "stt eval --checkpoint {w}/run --data {w}/nodata", r"nodata: no such data folder"),
    Row("prepare-missing-data", "stt prepare features --data {w}/nodata", r"nodata: no such data folder"),
    Row(
        "prepare-missing-wav2vec",
        "stt prepare features --data {w}/data --frontend wav2vec:{w}/missing_wav2vec.pt",
        r"missing_wav2vec\.pt: wav2vec checkpoint not found",
    ),
    Row(
        "synth-into-foreign-folder",
        "stt prepare synth --out {w}/not_synth --hours 0.01",
        r"not_synth: exists and is not a synthetic corpus; choose another --out",
    ),
    # configs and flags
    Row(
        "train-over-previous-run",
        "stt train --config {w}/run.yaml --data {w}/data --out {w}/run",
        r"run: holds a previous run \(best\.pt, .*\); continue it with --resume, or replace it with --overwrite",
    ),
    Row(
        "train-missing-config",
        "stt train --config {w}/nope.yaml --data {w}/data --out {w}/new",
        r"nope\.yaml: no such file",
    ),
    Row(
        "train-residual-string",
        "stt train --config {w}/residual.yaml --data {w}/data --out {w}/new",
        r"residual\.yaml: model\.residual: 'false' is not one of true, false",
    ),
    Row(
        "train-epochs-string",
        "stt train --config {w}/epochs.yaml --data {w}/data --out {w}/new",
        r"epochs\.yaml: train\.epochs: 'ten' is not an integer",
    ),
    Row(
        "train-unknown-key",
        "stt train --config {w}/unknown.yaml --data {w}/data --out {w}/new",
        r"unknown\.yaml: train\.epoch: unknown key; valid: epochs, lr, ",
    ),
    Row(
        "train-infeasible-stride",
        "stt train --config {w}/stride.yaml --data {w}/data --out {w}/new",
        r"stride\.yaml: total stride 64 gives .* use a total stride <= \d+",
    ),
    Row(
        "train-epochs-zero",
        "stt train --config {w}/run.yaml --data {w}/data --out {w}/new --epochs 0",
        r"argument --epochs: 0: expected an integer >= 1",
    ),
    Row(
        "train-epochs-negative",
        "stt train --config {w}/run.yaml --data {w}/data --out {w}/new --epochs -1",
        r"argument --epochs: -1: expected an integer >= 1",
    ),
    # studies and storages
    Row(
        "resume-unknown-study-default-storage",
        "stt-search resume --study nope",
        r"storage sqlite:///results/studies\.db: no such file \(a study database is created by `stt-search launch`",
    ),
    Row(
        "resume-storage-missing-folder",
        "stt-search resume --study nope --storage sqlite:///{w}/no/dir/s.db",
        r"no/dir/s\.db: no such file",
    ),
    Row(
        "resume-unknown-study",
        "stt-search resume --study nope --storage sqlite:///{w}/studies.db",
        r"no study 'nope' in sqlite:///.*studies\.db \(studies there: empty, escape, evilweights\)",
    ),
    Row(
        "export-unknown-study",
        "stt-search export --study nope --storage sqlite:///{w}/studies.db -o {w}/x.yaml",
        r"no study 'nope'",
    ),
    Row(
        "export-empty-study",
        "stt-search export --study empty --storage sqlite:///{w}/studies.db -o {w}/x.yaml",
        r"study 'empty' has no finished trial to export yet",
    ),
    Row(
        "compare-empty-study",
        "stt-search compare empty --storage sqlite:///{w}/studies.db --out {w}/report",
        r"empty: no trial has finished yet, nothing to compare",
    ),
    Row(
        "export-run-dir-escape",
        "stt-search export --study escape --storage sqlite:///{w}/studies.db -o {w}/x.yaml --weights "
        "--runs-dir {w}/runs",
        r"trial 0: no weights at .*/runs/escape/trial_0/best\.pt",  # the stored ../../etc is never read
    ),
    Row(
        "train-config-not-utf8",
        "stt train --config {w}/latin1.yaml --data {w}/data --out {w}/out",
        r"latin1\.yaml: not UTF-8 text \(byte 0xe9 at offset \d+\)",
    ),
    Row(
        "train-config-is-a-folder",
        "stt train --config {w}/folder.yaml --data {w}/data --out {w}/out",
        r"folder\.yaml: is a folder, expected a file",
    ),
    Row(
        "launch-space-not-utf8",
        "stt-search launch --space {w}/latin1_space.yaml --data {w}/data --study s --storage sqlite:///{w}/new.db",
        r"latin1_space\.yaml: not UTF-8 text \(byte 0xe9 at offset \d+\)",
    ),
    Row(
        "launch-space-is-a-folder",
        "stt-search launch --space {w}/folder.yaml --data {w}/data --study s --storage sqlite:///{w}/new.db",
        r"folder\.yaml: is a folder, expected a file",
    ),
    Row(
        "transcribe-decoder-json-not-a-number",
        "stt transcribe --checkpoint {w}/tuned_run {w}/one.flac --decoder beam",
        r"tuned_run/decoder\.json: lm_weight: 'high' is not a number; fix it, or run `stt tune-decoder` again",
    ),
    Row(
        "transcribe-missing-file",
        "stt transcribe --checkpoint {w}/run {w}/nope.flac",
        r"nope\.flac: no such audio file",
    ),
    Row(
        "launch-study-name-escapes",
        "stt-search launch --space {w}/space.yaml --data {w}/data --study ../../escape --storage sqlite:///{w}/new.db",
        r"--study '\.\./\.\./escape': expected 1 to 100 letters, digits, '\.', '_' or '-'",
    ),
    Row(
        "launch-study-name-too-long",
        "stt-search launch --space {w}/space.yaml --data {w}/data --study "
        + "s" * 300
        + " --storage sqlite:///{w}/new.db",
        r"--study 'sssss*\.\.\. \(300 characters\)': expected 1 to 100 letters",
    ),
    Row(
        "launch-password-in-url",
        "stt-search launch --space {w}/space.yaml --data {w}/data --study s "
        "--storage postgresql://stt:hunter2@127.0.0.1:9/db",
        r"storage postgresql://stt:\*\*\*@127\.0\.0\.1:9/db: cannot be opened",
        hidden=("hunter2",),
        prepare=_fast_retries,
    ),
    Row(
        "launch-trials-zero",
        "stt-search launch --space {w}/space.yaml --data {w}/data --study s --trials 0",
        r"argument --trials: 0: expected an integer >= 1",
    ),
    Row(
        "launch-unknown-space",
        "stt-search launch --space nosuch --data {w}/data --study s --storage sqlite:///{w}/new.db",
        r"nosuch: no such space file \(shipped spaces: quartznet, quartznet_cpu, seed, small\)",
    ),
    Row(
        "launch-bad-space-value",
        "stt-search launch --space {w}/bad_space.yaml --data {w}/data --study s --storage sqlite:///{w}/new.db",
        r"bad_space\.yaml: branch\.kernel: 'five' is not an integer >= 1",
    ),
    Row(
        "launch-missing-wav2vec",
        "stt-search launch --space {w}/w2v_space.yaml --data {w}/data --study s --storage sqlite:///{w}/new.db",
        r"missing_wav2vec\.pt: wav2vec checkpoint not found",
    ),
    Row(
        "launch-existing-study",
        "stt-search launch --space {w}/space.yaml --data {w}/data --study empty --storage sqlite:///{w}/studies.db",
        r"study 'empty' already exists in sqlite:///.*studies\.db; continue it with `stt-search resume --study empty`",
    ),
    Row(
        "storage-proxy-reachable-without-insecure",
        "stt-search storage-proxy --storage sqlite:///{w}/studies.db --host 0.0.0.0",
        r"--host 0\.0\.0\.0: the storage proxy has no authentication, .* serve TLS \(--tls-cert/--tls-key\), or pass "
        r"--insecure",
    ),
    Row(
        "storage-proxy-half-tls",
        "stt-search storage-proxy --storage sqlite:///{w}/studies.db --tls-key {w}/run.yaml",
        r"--tls-cert and --tls-key: give both",
    ),
    Row(
        "storage-file-others-read",
        "stt-search resume --study s --storage-file {w}/storage.txt",
        r"--storage-file \S+/storage\.txt: mode 0644 lets other users read it; expected 0600",
        hidden=("hunter2",),
        prepare=lambda w, mp: (
            (w / "storage.txt").write_text("postgresql://u:hunter2@h/db\n") or (w / "storage.txt").chmod(0o644)
        ),
    ),
    Row(
        "slurm-bad-sbatch-option",
        "stt-search slurm --study empty --storage sqlite:///{w}/studies.db --sbatch =high",
        r"--sbatch '=high': expected an sbatch option as KEY=VALUE",
    ),
    Row(
        "prepare-shard-out-of-range",
        "stt prepare features --data {w}/data --shard 3/3",
        r"argument --shard: 3/3: expected I/N with 0 <= I < N",
    ),
    # the disk
    Row(
        "train-disk-full",
        "stt train --config {w}/run.yaml --data {w}/data --out {w}/mnt/run",
        r"mnt/run/\S+: cannot write \(no space left on the device\)",
        disk="full",
    ),
    Row(
        "launch-read-only-results",
        "stt-search launch --space {w}/space.yaml --data {w}/data --study s "
        "--storage sqlite:///{w}/mnt/results/studies.db",
        r"mnt/results: cannot write \(read-only file system\)",
        disk="readonly",
    ),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the root with its size and modification time, and every folder (a lock file that came
    and went changes its folder's time, not what is in it)."""
    seen = {}
    for p in root.rglob("*"):
        if p.name.endswith(("-shm", "-wal")):  # SQLite's shared-memory index and log come and go with readers
            continue
        st = p.lstat()
        seen[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() else (-1, 0)
    return seen


@contextlib.contextmanager
def _tmpfs(where: Path, kind: str):
    if os.geteuid() != 0:
        pytest.skip("a tmpfs needs root (CI runs as root)")
    where.mkdir()
    opts = "size=96k" if kind == "full" else "ro,size=64k"
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)
        where.rmdir()


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(row, world, monkeypatch, capsys):
    w = world
    monkeypatch.chdir(w / "cwd")
    if row.prepare:
        row.prepare(w, monkeypatch)
    argv = row.argv.format(w=w).split()
    main = stt_main if argv[0] == "stt" else search_main
    with _tmpfs(w / "mnt", row.disk) if row.disk else contextlib.nullcontext():
        before = _snapshot(w)
        try:
            rc = main(argv[1:])
        except SystemExit as e:  # argparse: a bad flag
            rc = e.code
        after = _snapshot(w)
        written = sorted(p for p in after if p.startswith(str(w / "mnt")) and Path(p).is_file())
        for p in written:  # whole, or not there
            if p.endswith(".pt"):
                load_checkpoint(p, keys=("model",))
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    if os.environ.get("STT_PRINT_ROWS"):  # the table for a note: STT_PRINT_ROWS=1 pytest -s tests/test_bad_input.py
        with capsys.disabled():
            print(f"[row] {row.id}: {last.replace(str(w), 'W')}")
    assert re.search(row.message, last), last
    assert last.startswith(f"{argv[0]} {argv[1]}: error: ") or last.startswith(
        f"{argv[0]} {argv[1]} {argv[2]}: error: "
    )
    assert not (w / "PAYLOAD_RAN").exists(), "the payload ran"
    for secret in row.hidden:
        assert secret not in out + err
    changed = sorted(set(after) ^ set(before) | {p for p in after if p in before and after[p] != before[p]})
    if row.disk:  # the folders asked for may appear; no file is half-written or left temporary
        changed = [p for p in changed if not p.startswith(str(w / "mnt"))]
        assert not [p for p in written if ".tmp" in Path(p).name], written
    assert changed == [], changed
    assert not list((w / "cwd").iterdir()), "a command that failed created files in the working folder"
