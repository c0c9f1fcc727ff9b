"""What the search tests share: a tiny space and a working folder with the tiny corpus, and a real PostgreSQL
server for the storage tests (initdb in a temporary folder, loopback only, stopped at the end).

CI installs Debian's ``postgresql`` package (``.ci/run``); on a machine without it these tests skip,
except under CI, where a missing server is a failure.
"""

import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path, base: Path, port: int, as_user: list[str]):
        self.bindir, self.base, self.port, self.as_user = bindir, base, port, as_user
        self.data, self.sock = base / "data", base / "sock"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/stt"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bindir / tool), *args], check=True, capture_output=True, text=True)

    def _ctl(self, action: str, *extra: str) -> None:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-o", opts, "-w", *extra, action)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """Drop every connection and come back (``-m fast``: active sessions are terminated)."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def _query(self, sql: str) -> str:
        psql = [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "stt"]
        out = subprocess.run([*self.as_user, *psql, "-Atc", sql], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def password_role(self, name: str, password: str) -> str:
        """A role that must give its password (scram over TCP; others keep trust), owning a new database of its
        name; returns its URL with the password in it."""
        self._query(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        self._query(f"CREATE DATABASE {name} OWNER {name}")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self._run("pg_ctl", "-D", str(self.data), "reload")
        return f"postgresql://{name}:{password}@127.0.0.1:{self.port}/{name}"

    def connections(self) -> int:
        return int(self._query("select count(*) from pg_stat_activity where datname='stt'"))

    def in_transaction(self) -> int:
        """Sessions (but this query's own) inside a statement or an open transaction."""
        return int(
            self._query(
                "select count(*) from pg_stat_activity where datname='stt' and pid <> pg_backend_pid() "
                "and state in ('active', 'idle in transaction', 'idle in transaction (aborted)')"
            )
        )


def start_postgres(base: Path | None = None) -> PostgresServer | None:
    """initdb and start a loopback server with an empty database ``stt``; None when PostgreSQL is not installed."""
    bindir = _bindir()
    if bindir is None:
        return None
    base = Path(base or tempfile.mkdtemp(prefix="stt-pg-"))
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root: the server runs as the postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
    server = PostgresServer(bindir, base, free_port(), as_user)
    server.sock.mkdir()
    if as_user:
        shutil.chown(server.sock, "postgres")
    server._run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    server.start()
    server._run("createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "stt")
    return server


def stop_postgres(server: PostgresServer) -> None:
    try:
        server.stop()
    finally:
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    server = start_postgres()
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql package")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    try:
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture(scope="session")
def slurm():
    """A single-node Slurm cluster (tests.search.slurm_cluster) for the session; its ``env`` points at it."""
    from tests.search.slurm_cluster import installed, start_slurm

    if not installed() or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("Slurm is not installed (or not root): .ci/run installs slurmctld slurmd slurm-client munge")
        pytest.skip("a single-node Slurm cluster needs root and Debian's slurmctld slurmd slurm-client munge")
    cluster = start_slurm()
    try:
        yield cluster
    finally:
        cluster.stop()


# a tiny space over every searchable block type: candidates train in seconds on the tiny corpus
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


def rows(db):
    """(number, state, stored config JSON) of every trial in a SQLite study database."""
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT t.number, t.state, a.value_json FROM trials t LEFT JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = 'config' ORDER BY t.number"
    ).fetchall()
    con.close()
    return rows


SEARCH = [sys.executable, "-m", "search.cli"]  # the stt-search command, run as a process


def launch_argv(study: str, storage: str, trials: int, *flags: str) -> list[str]:
    """``stt-search launch`` arguments for the tiny space on the working folder's corpus; ``flags``: the test's own."""
    where = ["--space", "space.yaml", "--data", "data", "--storage", storage]
    return ["launch", *where, "--study", study, "--trials", str(trials), *flags]


class StderrLines:
    """A process's stderr (or ``stream``) read by a thread (so its pipe never fills while the test waits on
    another process), with an event set when a line containing ``when`` arrives."""

    def __init__(self, proc, when: str, stream=None):
        self.lines, self.when, self.seen = [], when, threading.Event()
        self._thread = threading.Thread(target=self._read, args=(stream or proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)
            if self.when in line:
                self.seen.set()

    def text(self) -> str:
        self._thread.join(timeout=60)
        return "".join(self.lines)
