"""Where studies live: one URL, three kinds of storage.

* ``sqlite:///results/studies.db`` (the default): one host. In WAL mode, so local workers that share
  the file do not lock each other out (readers never block the writer).
* ``postgresql://user:password@host/db``: many hosts. Opened through psycopg 3 with ``pool_pre_ping``
  (a connection that died while idle is replaced before use), and every storage call that meets a
  dropped connection or a lock timeout is retried with back-off, so workers ride out a server restart.
* ``journal:///results/studies.log``: Optuna's journal file, for one host's workers that share a file
  system. It has no heartbeats: a dead worker's trial is re-queued only by the process check on its host.
* ``grpc://host:port``: Optuna's gRPC storage proxy (``stt-search storage-proxy``) in front of one of
  the above, for hundreds of workers: they hold one connection to the proxy instead of one pool each
  to the database. ``grpcs://host:port``: the same over TLS (``storage-proxy --tls-cert/--tls-key``; the
  workers trust ``$STT_SEARCH_TLS_CA``).

Passwords are never printed: every message goes through :func:`redact`. Nor are they put on a command line, where
every user of the host reads them (``ps``, ``/proc/PID/cmdline``): a URL with a password is given in
``$STT_SEARCH_STORAGE`` or a file only its owner reads (``--storage-file``), or the URL carries no password and
libpq finds it in ``~/.pgpass`` or ``$PGPASSWORD``. Workers this process starts (``--workers N``, Slurm jobs)
inherit the URL through their environment (:func:`storage_env`), never their arguments.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from stt.core.errors import StudyError

log = logging.getLogger("search")
DEFAULT_STORAGE = "sqlite:///results/studies.db"
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # seconds between attempts: rides out a ~30 s outage


STORAGE_ENV = "STT_SEARCH_STORAGE"  # the storage URL, when neither --storage nor --storage-file gives it
_warned_argv = False


class StorageError(StudyError):
    """A storage that cannot be opened (one line, names the URL without its password)."""


_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)(\S*)")
_SECRET_KEY = re.compile(r"pass|secret|token", re.IGNORECASE)  # password, sslpassword, passfile, ...
# key=value pairs in a libpq DSN ("host=db password='a b' user=x") or anywhere else in a message
_SECRET_PAIR = re.compile(r"(\b\w*(?:pass|secret|token)\w*\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;,)]*)", re.IGNORECASE)


def _userinfo(rest: str) -> tuple[str, str, str] | None:
    """``(user, password, the rest after '@')`` of a URL's part after ``scheme://``; None without a password.

    The password runs from the user's ':' to the *last* '@': one that was not percent-encoded may hold '@',
    ':', '/' or '?', and every byte of it must go (a '@' in the query over-redacts, which is safe).
    """
    user, colon, _ = rest.partition(":")
    if not colon or "@" not in rest or any(c in user for c in "/?@"):
        return None
    at = rest.rfind("@")
    return user, rest[len(user) + 1 : at], rest[at + 1 :]


def _query_pairs(query: str) -> list[tuple[str, str, str]]:
    """A URL query's ``key=value`` pairs as ``(key, '=', value)`` (``(key, '', '')`` for a bare key)."""
    return [p.partition("=") for p in query.split("&")]


def _redact_url(m: re.Match) -> str:
    scheme, rest = m.group(1), m.group(2)
    parts = _userinfo(rest)
    if parts is not None:
        rest = f"{parts[0]}:***@{parts[2]}"
    where, q, query = rest.partition("?")
    if q:
        query = "&".join(k + eq + ("***" if eq and _SECRET_KEY.search(k) else v) for k, eq, v in _query_pairs(query))
    return scheme + where + q + query


def redact(text: str, url: str | None = None) -> str:
    """A storage URL, or a message holding one or a DSN, fit to print: every password replaced by ***.

    Covers ``user:password@host`` (the password may hold ``@``), query values such as ``?password=`` and
    ``sslpassword=``, and ``password=...`` pairs of a libpq DSN. With ``url``, a driver's message about that
    URL: the driver may have cut the password elsewhere (``hun@ter2@host`` is host ``ter2@host`` to it), so
    every piece of the password is removed wherever it appears.
    """
    text = _SECRET_PAIR.sub(r"\1***", _URL.sub(_redact_url, text))
    for secret in _passwords(url) if url else ():
        for piece in sorted({secret, *re.split(r"[@:/?#&=]", secret)}, key=len, reverse=True):
            if len(piece) >= 3:  # shorter pieces would blank out ordinary words; too short to guess from
                text = text.replace(piece, "***")
    return text


def _passwords(url: str) -> list[str]:
    """The password-like values in a storage URL (its userinfo password, secret query values)."""
    _, sep, rest = url.partition("://")
    parts = _userinfo(rest) if sep else None
    out = [parts[1]] if parts is not None else []
    query = (parts[2] if parts is not None else rest).partition("?")[2]
    out += [v for k, eq, v in _query_pairs(query) if eq and _SECRET_KEY.search(k)] if query else []
    return [s for s in out if s]


def storage_url(given: str | None = None, file: str | None = None) -> str | None:
    """The storage URL a command works on: ``--storage``, else ``--storage-file``'s, else ``$STT_SEARCH_STORAGE``
    (None: the default). A password on the command line works but is warned about once per process.

    The file holds the URL on its first line, and may be read by its owner alone (mode 0600 or 0400), as libpq
    asks of ``~/.pgpass``: a file others can read is refused, naming its mode.
    """
    global _warned_argv
    if given is not None and file is not None:
        raise StorageError("--storage and --storage-file: give one of them (both name the study's storage)")
    if given is not None:
        if _passwords(given) and not _warned_argv:
            _warned_argv = True
            log.warning(
                "--storage: a password on the command line is visible to every user of this host (ps, "
                "/proc/PID/cmdline); give the URL in $%s or --storage-file, or the password in ~/.pgpass",
                STORAGE_ENV,
            )
        return given
    if file is not None:
        return _read_storage_file(Path(file))
    return os.environ.get(STORAGE_ENV) or None


def _read_storage_file(path: Path) -> str:
    import stat

    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise StorageError(f"--storage-file {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StorageError(
            f"--storage-file {path}: mode {stat.S_IMODE(mode):04o} lets other users read it; expected 0600 "
            f"(chmod 600 {path})"
        )
    url = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if "://" not in url:
        raise StorageError(f"--storage-file {path}: line 1: expected a storage URL (postgresql://..., sqlite:///...)")
    return url


def storage_env(url: str | None, file: str | None = None) -> dict[str, str]:
    """What a worker started by this process needs in its environment to open ``url`` (nothing on its command
    line): the URL itself, or, when it came from ``--storage-file``, nothing (the file's path is passed)."""
    return {} if url is None or file is not None else {STORAGE_ENV: url}


@contextlib.contextmanager
def stable_enough():
    """Heartbeats, retries and TPE's grouped sampling: the search is built on them; Optuna labels them experimental."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


_FULL = ("database or disk is full", "no space left on device", "disk quota exceeded", "could not extend file")


def disk_full(e: BaseException | None) -> str | None:
    """The first line of the error behind ``e`` (its causes and contexts too) that says a disk is full, or None.

    SQLite says "database or disk is full", PostgreSQL "could not extend file ...: No space left on device"
    (SQLSTATE 53100), a file write ENOSPC; Optuna may wrap any of them, or fail on its way out because of one.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e.strerror or str(e)
        if getattr(e, "sqlstate", None) == "53100" or any(m in str(e).lower() for m in _FULL):
            line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return re.sub(r"^\([\w.]+\)\s*", "", line)[:200]  # without SQLAlchemy's "(sqlite3.OperationalError)"
        e = e.__cause__ or e.__context__
    return None


def _transient(e: BaseException) -> bool:
    """A dropped connection, a restarting server or a lock timeout: worth another try (a full disk is not)."""
    import sqlalchemy.exc as sa

    if disk_full(e) is not None:
        return False
    cause = e.__cause__ if isinstance(e, optuna.exceptions.StorageInternalError) else e
    if isinstance(cause, sa.DBAPIError) and cause.connection_invalidated:
        return True
    # PendingRollbackError: Optuna's _get_trials queries again on the dropped connection before rolling back
    return isinstance(cause, (sa.OperationalError, sa.InterfaceError, sa.PendingRollbackError))


def _with_retries(call, url: str, doing: str = "retrying", final: tuple[str, ...] = ()):
    """``call()``, retried with back-off while it fails with a transient error (none of ``final`` in it)."""
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            return call()
        except Exception as e:
            if delay is None or not _transient(e) or any(m in str(e).lower() for m in final):
                raise
            log.warning(
                "storage %s: %s; %s in %.1f s (attempt %d)",
                redact(url),
                redact(str(e.__cause__ or e).splitlines()[0][:160], url),
                doing,
                delay,
                attempt + 2,
            )
            time.sleep(delay)


def _retrying(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return _with_retries(lambda: method(self, *args, **kwargs), self.url)

    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose calls are retried with back-off on transient database errors.

    A retried ``create_new_trial`` whose first attempt had committed before the connection dropped leaves
    an orphan RUNNING trial; the heartbeat fails it later and it never counts towards the target.
    """


for _name, _fn in list(vars(optuna.storages.RDBStorage).items()):
    if (
        callable(_fn)
        and not _name.startswith("_")
        and _name not in ("remove_session", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback")
    ):
        setattr(RetryingRDBStorage, _name, _retrying(_fn))
# Optuna's cache layer reads through these private methods (a trial list on every get_trials): reads, so retried
for _name in ("_get_trials", "_get_best_trial_id", "_get_stale_trial_ids"):
    setattr(RetryingRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))


def normalise_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg://`` (SQLAlchemy would otherwise look for psycopg2)."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def open_storage(url: str | None = None, heartbeat: int = 30, create: bool = False) -> optuna.storages.BaseStorage:
    """Open a storage URL; ``heartbeat``: seconds between a running trial's beats (RDB storages).

    ``create``: a file storage (SQLite, journal) that does not exist yet is created, with its folder.
    Without it (every command but launch) a missing file is a :class:`StorageError` and nothing is written.

    A trial whose worker stops beating for 4 heartbeats is failed and re-queued by the next worker that
    asks for a trial; the copy resumes from the trial's last checkpoint.
    """
    url = given = url or DEFAULT_STORAGE
    try:
        if url.startswith("journal:///"):  # Optuna's append-only log file; measured beside SQLite in bench/
            from optuna.storages.journal import JournalFileBackend

            path = _file_storage(url, "journal:///", create)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url.startswith(("grpc://", "grpcs://")):
            scheme, _, where = url.partition("://")
            host, _, port = where.rstrip("/").rpartition(":")
            with stable_enough():
                if scheme == "grpcs":  # the proxy serves TLS (storage-proxy --tls-cert)
                    return _tls_proxy(host or "localhost", int(port))
                return optuna.storages.GrpcStorageProxy(host=host or "localhost", port=int(port))
        kwargs = {}
        if url.startswith("sqlite:///"):
            path = _file_storage(url, "sqlite:///", create)
            _wal(path)
            kwargs = {"connect_args": {"timeout": 60}}
        elif url.startswith(("postgres://", "postgresql")):
            url = normalise_url(url)
            # A worker keeps one connection; the heartbeat thread borrows a second only while it beats.
            # SQLAlchemy's default (5 kept + 10 overflow) made 64 workers exceed the server's 100 clients.
            kwargs = {"pool_pre_ping": True, "pool_size": 1, "max_overflow": 4, "connect_args": {"connect_timeout": 10}}
        return _open_rdb(url, heartbeat, kwargs, wait=not url.startswith("sqlite"))
    except StorageError:
        raise
    except Exception as e:  # sqlalchemy/driver errors: one line naming the URL
        raise StorageError(
            f"storage {redact(given)}: cannot be opened ({redact(str(e).splitlines()[0][:200], given)})"
        ) from None


# A server that answers these will not change its mind: say so at once instead of retrying for half a minute.
_FINAL = ("authentication failed", "does not exist", "no password supplied", "permission denied")


def _file_storage(url: str, scheme: str, create: bool) -> Path:
    path = Path(url[len(scheme) :])
    if not path.exists() and not create:
        raise StorageError(
            f"storage {url}: no such file (a study database is created by `stt-search launch`; check --storage)"
        )
    if create:
        from stt.core.files import make_dir

        make_dir(path.parent)
    return path


def _wal(path: Path) -> None:
    """Put a SQLite database in WAL mode. Two processes doing it to a new file at once (two launches) may get
    "database is locked" at once, whatever the timeout: SQLite does not wait there, so we do."""
    for attempt in range(10):
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=60)) as con:
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if attempt == 9 or "locked" not in str(e):
                raise
            time.sleep(0.1 * (attempt + 1))


# What creating Optuna's tables says when another process (a second launch) creates them at the same moment.
_RACED = ("already exists", "unique constraint failed: alembic_version", "duplicate key value", "database is locked")


def _open_rdb(url: str, heartbeat: int, engine_kwargs: dict, wait: bool) -> RetryingRDBStorage:
    """Open; with ``wait``, with the same back-off as every later call, so a server that is full ("too many
    clients") or restarting when a worker starts is waited for instead of failing the worker."""

    def open_once():
        for attempt in range(5):
            try:
                return make()
            except Exception as e:
                # another process (a second launch) was creating the schema at the same moment: once it has,
                # opening finds it there
                if attempt == 4 or not any(m in str(e).lower() for m in _RACED):
                    raise
                time.sleep(0.2 * (attempt + 1))

    def make():
        with stable_enough():
            return RetryingRDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=heartbeat * 4,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                engine_kwargs=engine_kwargs or None,
            )

    return _with_retries(open_once, url, "opening again", _FINAL) if wait else open_once()


def loopback(host: str) -> bool:
    """Whether an address to listen on is reachable from this host alone (``localhost``, 127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def serve_proxy(
    url: str | None,
    host: str = "localhost",
    port: int = 13000,
    insecure: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
    """Serve a storage to gRPC clients (``grpc://HOST:PORT``, or ``grpcs://`` with TLS) until interrupted.

    Optuna's proxy has no authentication, so whoever reaches it may rewrite or delete every study behind it: it
    listens on a loopback address unless TLS (``tls_cert``/``tls_key``: workers then need the certificate, see
    :func:`open_storage`) or ``insecure`` says the network is trusted.
    """
    if (tls_cert is None) != (tls_key is None):
        raise StudyError("--tls-cert and --tls-key: give both (the certificate chain and its private key) or neither")
    credentials = _server_credentials(tls_cert, tls_key) if tls_cert else None
    if not loopback(host) and not insecure and credentials is None:
        raise StudyError(
            f"--host {host}: the storage proxy has no authentication, so anyone who reaches {host}:{port} could "
            "rewrite or delete the studies; listen on localhost (the default), serve TLS (--tls-cert/--tls-key), "
            "or pass --insecure on a network only your workers reach"
        )
    from optuna.storages._grpc.server import make_server

    storage = open_storage(url, create=True)
    with stable_enough():
        server = (
            make_server(storage, host, port) if credentials is None else _tls_server(storage, host, port, credentials)
        )
    server.start()
    log.info(
        "storage proxy for %s on %s://%s:%d",
        redact(url or DEFAULT_STORAGE),
        "grpcs" if credentials else "grpc",
        host,
        port,
    )
    server.wait_for_termination()


def _server_credentials(cert: str, key: str):
    import grpc

    pem = {}
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            pem[flag] = Path(path).read_bytes()
        except OSError as e:
            raise StudyError(f"{flag} {path}: cannot be read ({e.strerror})") from None
        if b"-----BEGIN" not in pem[flag]:
            raise StudyError(f"{flag} {path}: expected a PEM file (-----BEGIN ...)")
    return grpc.ssl_server_credentials([(pem["--tls-key"], pem["--tls-cert"])])


def _tls_server(storage, host: str, port: int, credentials):
    """Optuna's proxy server (its own servicer), on a TLS port instead of its plain one."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from optuna.storages._grpc import servicer
    from optuna.storages._grpc.auto_generated import api_pb2_grpc

    server = grpc.server(ThreadPoolExecutor(max_workers=10))
    api_pb2_grpc.add_StorageServiceServicer_to_server(servicer.OptunaStorageProxyService(storage), server)
    server.add_secure_port(f"{host}:{port}", credentials)
    return server


TLS_CA_ENV = "STT_SEARCH_TLS_CA"  # a grpcs:// worker's trusted certificate(s), PEM (default: the system's)


def _tls_proxy(host: str, port: int):
    """A client of a TLS proxy: Optuna's ``GrpcStorageProxy`` on a secure channel. It trusts the certificates in
    ``$STT_SEARCH_TLS_CA`` (a self-signed proxy's own certificate), else the system's."""
    import grpc
    from optuna.storages._grpc import client

    ca_path = os.environ.get(TLS_CA_ENV)
    try:
        ca = Path(ca_path).read_bytes() if ca_path else None
    except OSError as e:
        raise StorageError(f"${TLS_CA_ENV} {ca_path}: cannot be read ({e.strerror})") from None

    class TlsGrpcStorageProxy(optuna.storages.GrpcStorageProxy):
        def _setup(self) -> None:
            self._channel = grpc.secure_channel(
                f"{self._host}:{self._port}",
                grpc.ssl_channel_credentials(root_certificates=ca),
                options=[("grpc.max_receive_message_length", -1)],
            )
            self._stub = client.api_pb2_grpc.StorageServiceStub(self._channel)
            self._cache = client.GrpcClientCache(self._stub)

    return TlsGrpcStorageProxy(host=host, port=port)


def existing_studies(url: str | None) -> dict[str, dict]:
    """The studies in a storage, name -> user attributes; none (nothing created) when its file does not exist yet."""
    try:
        st = open_storage(url)
    except StorageError as e:
        if "no such file" in str(e):
            return {}
        raise
    return {s.study_name: s.user_attrs for s in optuna.get_all_study_summaries(st, include_best_trial=False)}


def load_study(name: str, url: str | None = None, storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """A stored study by name (``storage``: already opened from ``url``); a missing one is one line naming them."""
    st = storage or open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=st)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False))
        raise StudyError(
            f"no study '{name}' in {redact(url or DEFAULT_STORAGE)} (studies there: {', '.join(names) or 'none'})"
        ) from None
