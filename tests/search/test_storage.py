"""Storages: a real PostgreSQL shared by worker processes (a restart included), the gRPC proxy, SQLite in WAL."""

import contextlib
import json
import logging
import shutil
import sqlite3
import subprocess
import sys

import optuna
import pytest

from search.cli import main as search_main
from search.storage import normalise_url, open_storage
from tests.search.conftest import SEARCH, StderrLines, free_port, launch_argv
from tests.search.conftest import SPACE as STUDY_SPACE

SPACE = STUDY_SPACE.replace("epochs: 2", "epochs: %d")  # the same tiny space, epochs chosen per test


@pytest.fixture
def workdir(tiny_corpus, tmp_path, monkeypatch):
    shutil.copytree(tiny_corpus, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _launch(study, storage, trials, workers, workdir, epochs=1):
    """The command that launches ``workers`` local worker processes on a new study."""
    (workdir / "space.yaml").write_text(SPACE % epochs)
    return [
        *SEARCH,
        *launch_argv(study, storage, str(trials), "--seed", "0", "--pruner", "none", "--workers", str(workers)),
    ]


def _check_exact(study, storage, trials):
    all_trials = optuna.load_study(study_name=study, storage=open_storage(storage)).trials
    counted = [t for t in all_trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == trials, [
        (t.number, t.state.name, t.user_attrs.get("status"), t.user_attrs.get("reason")) for t in all_trials
    ]
    trained = [t.user_attrs["config_hash"] for t in counted if "duplicate_of" not in t.user_attrs]
    assert len(trained) == len(set(trained)), "a config was trained twice"
    for t in counted:  # every finished trial's config and metrics are in the database
        assert json.loads(t.user_attrs["config"])["model"]["layers"] and t.user_attrs["dev_wer"] is not None
        assert t.user_attrs["epochs"] >= 1 and t.user_attrs["params"] > 0
    return counted


def test_postgresql_urls_use_psycopg_3():
    assert normalise_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalise_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert normalise_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"


def test_sqlite_storage_is_in_wal_mode(tmp_path):
    open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    with sqlite3.connect(tmp_path / "s.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.slow
def test_three_workers_share_a_twelve_trial_postgresql_study(workdir, postgres):
    cmd = _launch("pg12", postgres.url, 12, 3, workdir)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counted = _check_exact("pg12", postgres.url, 12)
    assert len({t.user_attrs["worker"] for t in counted}) == 3
    assert "12/12 trials finished" in proc.stdout


@pytest.mark.slow
def test_workers_ride_out_a_postgresql_restart(workdir, postgres):
    cmd = _launch("pgrestart", postgres.url, 6, 3, workdir, epochs=2)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, restarted = [], False
    for line in proc.stderr:  # the workers' logs come through the launcher's stderr
        lines.append(line)
        if ": epoch 1 dev WER" in line:  # trials are running: take the database away under them
            postgres.restart()
            restarted = True
            break
    assert restarted, "".join(lines)[-3000:]
    lines += proc.stderr.readlines()
    out = proc.stdout.read()
    assert proc.wait(timeout=900) == 0, "".join(lines)[-3000:]
    _check_exact("pgrestart", postgres.url, 6)
    assert "6/6 trials finished" in out


@contextlib.contextmanager
def _storage_proxy(backend: str):
    """An ``stt-search storage-proxy`` in front of ``backend``, serving; yields its grpc:// URL."""
    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "storage-proxy", "--storage", backend, "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proxy.stderr:  # serving once it says where
            if "storage proxy for" in line:
                break
        yield f"grpc://localhost:{port}"
    finally:
        proxy.terminate()
        proxy.wait()


@pytest.mark.slow
def test_workers_through_the_grpc_storage_proxy(workdir):
    backend = f"sqlite:///{workdir}/proxied.db"
    with _storage_proxy(backend) as url:
        proc = subprocess.run(_launch("viaproxy", url, 3, 2, workdir), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    _check_exact("viaproxy", backend, 3)  # the trials landed in the database behind the proxy


@pytest.mark.slow
def test_the_storage_cannot_choose_where_a_worker_writes(workdir):
    """An attacker who can write to the storage (here through the gRPC proxy, which has no authentication) sets
    the study's runs_dir and enqueues a trial whose run_dir names a folder of the user's. The worker trains in
    its own runs root, and the folder is untouched."""
    from search.settings import settings_from_space
    from search.storage import load_study
    from search.study import create_study

    (workdir / "space.yaml").write_text(SPACE % 1)
    backend = f"sqlite:///{workdir}/proxied.db"
    create_study("victim", settings_from_space("space.yaml", "data", 1, pruner="none", seed=0), backend)
    precious = workdir / "precious" / "run"
    precious.mkdir(parents=True)
    (precious / "best.pt").write_bytes(b"a month of training")
    (precious / "config.yaml").write_text("mine\n")
    before = {p.name: p.read_bytes() for p in precious.iterdir()}
    with _storage_proxy(backend) as url:
        attacked = load_study("victim", url)
        attacked.set_user_attr("runs_dir", str(workdir / "precious"))  # "inside the runs root": the root is theirs
        attacked.enqueue_trial({}, user_attrs={"run_dir": "run", "candidate": 0})
        own = workdir / "results" / "runs"  # the host's default: no --runs-dir, as a user runs it
        proc = subprocess.run(
            [*SEARCH, "worker", "--study", "victim", "--storage", url],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in precious.iterdir()} == before  # nothing deleted, written or added
    (t,) = optuna.load_study(study_name="victim", storage=open_storage(backend)).trials
    assert t.state == optuna.trial.TrialState.COMPLETE
    trained = list(own.glob("victim-*/trial_0/config.yaml"))
    assert len(trained) == 1 and (trained[0].parent / "best.pt").exists()  # it trained in the worker's own root
    assert t.user_attrs["run_dir"] == str(trained[0].parent.relative_to(own))


def test_a_worker_waits_for_a_full_postgresql_server_instead_of_failing(postgres, caplog):
    """64 workers once met PostgreSQL's 100-client limit and 30 of them died at open; now they wait their turn."""
    import threading

    import psycopg

    hogs = []
    try:
        while True:  # take every connection the server will give
            try:
                hogs.append(psycopg.connect(postgres.url, connect_timeout=10))
            except psycopg.OperationalError as e:
                assert "too many clients" in str(e)
                break
            assert len(hogs) < 1000
        waiting = threading.Event()

        class Signal(logging.Handler):
            def emit(self, record):
                if "opening again" in record.getMessage():
                    waiting.set()

        handler = Signal()
        logging.getLogger("search").addHandler(handler)
        opened = {}
        worker = threading.Thread(target=lambda: opened.setdefault("storage", open_storage(postgres.url)))
        worker.start()
        assert waiting.wait(timeout=60), "open_storage neither waited nor succeeded"
    finally:
        for con in hogs:  # the server has room again
            con.close()
    worker.join(timeout=120)
    logging.getLogger("search").removeHandler(handler)
    assert "storage" in opened
    opened["storage"].get_all_studies()  # and it works


def test_a_wrong_database_fails_at_once_with_one_line(postgres):
    from search.storage import StorageError

    url = postgres.url.replace("/stt", "/nosuchdb").replace("postgres@", "postgres:secret@")
    with pytest.raises(StorageError) as e:
        open_storage(url)
    assert "nosuchdb" in str(e.value) and "secret" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "url,printed",
    [
        ("postgresql://alice:s3cr:et@db.example:5432/optuna", "postgresql://alice:***@db.example:5432/optuna"),
        ("postgresql://stt:hun@ter2@host/db", "postgresql://stt:***@host/db"),  # '@' in the password
        ("postgresql://stt:a/b?c@host/db", "postgresql://stt:***@host/db"),  # '/' and '?' too
        (
            "postgresql://stt@host/db?password=hunter2xyz&sslmode=require",
            "postgresql://stt@host/db?password=***&sslmode=require",
        ),
        ("postgresql://stt@host/db?sslpassword=hunter2xyz", "postgresql://stt@host/db?sslpassword=***"),
        ("failed: host=db user=stt password='hunter 2' dbname=x", "failed: host=db user=stt password=*** dbname=x"),
        ("sqlite:///results/studies.db", "sqlite:///results/studies.db"),
        ("grpc://127.0.0.1:5000", "grpc://127.0.0.1:5000"),
    ],
)
def test_redaction_removes_every_form_of_password(url, printed):
    from search.storage import redact

    assert redact(url) == printed


def test_passwords_are_never_printed(workdir, capsys, caplog, monkeypatch):
    from search.storage import redact

    monkeypatch.setattr("search.storage.RETRY_DELAYS", (0.01, 0.01))  # the retries log the URL too
    assert (
        redact("postgresql://alice:s3cr:et@db.example:5432/optuna") == "postgresql://alice:***@db.example:5432/optuna"
    )
    assert redact("sqlite:///results/studies.db") == "sqlite:///results/studies.db"
    assert search_main(["resume", "--study", "x", "--storage", "postgresql://alice:hunter2@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "alice:***@127.0.0.1:1" in err
    assert (
        search_main(["resume", "--study", "x", "--storage", "postgresql://al:hun@ter2@127.0.0.1:1/x?password=zz9"]) == 2
    )
    err = capsys.readouterr().err
    assert "ter2" not in err and "zz9" not in err and "al:***@127.0.0.1:1" in err
    assert "opening again" in caplog.text and "hunter2" not in caplog.text


@pytest.mark.slow
def test_a_study_database_on_a_full_disk_is_one_line_and_its_trial_resumes(workdir):
    """The disk under the study's SQLite database fills while trial 0 trains: the worker stops with one line
    (no retries for half a minute, no traceback), trial 0 stays resumable, and once space is freed, resume
    finishes the study from trial 0's checkpoint."""
    import os

    if os.geteuid() != 0:
        pytest.skip("a tmpfs needs root (CI runs as root)")
    mnt = workdir / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        storage = f"sqlite:///{mnt}/db.sqlite"
        (workdir / "space.yaml").write_text(SPACE.replace("[6000]", "[1500]") % 4)
        proc = subprocess.Popen(
            [*SEARCH, *launch_argv("full", storage, 2, "--sampler", "random", "--pruner", "none")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        log = StderrLines(proc, "trial 0: epoch 1 dev WER")
        assert log.seen.wait(timeout=300), log.text()[-3000:]
        # every byte the file system has left; unbuffered, so closing the file has nothing left to flush (and fail)
        with open(mnt / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
        assert proc.wait(timeout=300) == 2, log.text()[-3000:]
        text = log.text()
        assert "Traceback" not in text, text[-3000:]
        last = text.strip().splitlines()[-1]
        assert last.startswith("stt-search launch: error: no space left (database or disk is full)") and last.endswith(
            "free some space, then `stt-search resume --study full` continues"
        ), last
        (mnt / "filler").unlink()
        assert optuna.load_study(study_name="full", storage=storage).trials[0].state.name == "RUNNING"
        assert search_main(["resume", "--study", "full", "--storage", storage]) == 0
        trials = optuna.load_study(study_name="full", storage=storage).trials
        assert sum(t.state.name == "COMPLETE" for t in trials) == 2
        copy = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
        assert len(copy) == 1 and copy[0].state.name == "COMPLETE" and copy[0].user_attrs["resumed"] is True
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _self_signed(folder):
    """A self-signed certificate for localhost/127.0.0.1 and its key (openssl), as a proxy's TLS identity."""
    cert, key = folder / "proxy.crt", folder / "proxy.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_the_storage_proxy_serves_tls_and_a_plain_client_gets_nothing(tmp_path, monkeypatch):
    """Beyond loopback the proxy needs TLS or --insecure; over TLS, a worker that trusts the certificate reads
    and writes the study, and one speaking plain gRPC to the same port gets no answer."""
    cert, key = _self_signed(tmp_path)
    backend = f"sqlite:///{tmp_path}/behind.db"
    optuna.create_study(study_name="s", storage=backend).enqueue_trial({"x": 1.0})
    assert search_main(["storage-proxy", "--storage", backend, "--host", "0.0.0.0"]) == 2  # refused: no TLS
    assert search_main(["storage-proxy", "--storage", backend, "--tls-cert", str(cert)]) == 2  # both or neither
    port = free_port()
    proxy = subprocess.Popen(
        [*SEARCH, "storage-proxy", "--storage", backend, "--host", "127.0.0.1", "--port", str(port)]
        + ["--tls-cert", str(cert), "--tls-key", str(key)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        said = StderrLines(proxy, "storage proxy for")
        assert said.seen.wait(60), said.text()
        monkeypatch.setenv("STT_SEARCH_TLS_CA", str(cert))
        study = optuna.load_study(study_name="s", storage=open_storage(f"grpcs://localhost:{port}"))
        assert [t.params for t in study.trials] == [{}] and study.trials[0].state.name == "WAITING"
        study.set_user_attr("over_tls", True)
        plain = optuna.storages.GrpcStorageProxy(host="localhost", port=port)
        with pytest.raises(ConnectionError):
            plain.wait_server_ready(timeout=3)
    finally:
        proxy.terminate()
        proxy.wait()
    assert optuna.load_study(study_name="s", storage=backend).user_attrs == {"over_tls": True}


def test_the_storage_url_comes_from_the_environment_or_an_owner_only_file(tmp_path, monkeypatch, caplog):
    from search.settings import WorkerOptions
    from search.storage import STORAGE_ENV

    monkeypatch.setenv(STORAGE_ENV, "postgresql://u:fromenv@h/db")
    assert WorkerOptions().storage == "postgresql://u:fromenv@h/db"
    file = tmp_path / "storage"
    file.write_text("\npostgresql://u:fromfile@h/db\n")
    file.chmod(0o644)
    with pytest.raises(Exception, match=r"--storage-file .*storage: mode 0644 lets other users read it; expected 0600"):
        WorkerOptions(storage_file=str(file))
    file.chmod(0o600)
    opts = WorkerOptions(storage_file=str(file))
    assert opts.storage == "postgresql://u:fromfile@h/db" and opts.worker_env() == {}  # workers get the file's path
    monkeypatch.setattr("search.storage._warned_argv", False)
    with caplog.at_level(logging.WARNING, logger="search"):
        typed = [WorkerOptions(storage="postgresql://u:typed@h/db") for _ in range(2)]
    assert typed[0].storage == "postgresql://u:typed@h/db" and typed[0].worker_env() == {STORAGE_ENV: typed[0].storage}
    warned = [r.getMessage() for r in caplog.records if "visible to every user" in r.getMessage()]
    assert len(warned) == 1 and "typed" not in warned[0]  # once, and without the password
    file.write_text("not a url\n")
    with pytest.raises(Exception, match=r"line 1: expected a storage URL"):
        WorkerOptions(storage_file=str(file))
