"""Files that are either whole or absent: atomic writes and lock files that do not outlive their holder.

Every output (configs, checkpoints, shards, manifests, reports) is written to a temporary name beside
its target and renamed over it, so a killed or failing command leaves the previous file or none, never
half of one. A full disk or a read-only folder is a one-line :class:`~stt.core.errors.DataError` naming the
file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from stt.core.errors import DataError

TMP_PREFIX = ".tmp-"  # temporary names start with this; readers skip them, writers remove their own


def read_user_text(path: str | Path, error: type[Exception] = DataError) -> str:
    """A file the user named (a config, a space, a manifest, a transcript), as UTF-8 text.

    Every way such a file can be wrong is one line of ``error`` naming it: missing, a folder, unreadable,
    or not UTF-8 (with the first bad byte and its offset, to find it with ``xxd``). One helper, so no
    reader of user files can forget a case and end in a traceback.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected a file") from None
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except PermissionError:
        raise error(f"{path}: permission denied") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None


def _unwritable(path: Path, e: OSError) -> DataError:
    why = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "read-only file system",
    }.get(e.errno, e.strerror or str(e))
    return DataError(f"{path}: cannot write ({why})")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` if the block succeeds.

    On any exception (a full disk included) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # the data is on disk before the name points at it
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            raise _unwritable(path, e) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write a whole text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def make_dir(path: str | Path) -> Path:
    """``mkdir -p`` whose failure (read-only parent, full disk) is one line naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno == errno.EEXIST or e.errno == errno.ENOTDIR:
            raise DataError(f"{path}: cannot create the folder (a file of that name is in the way)") from None
        raise _unwritable(path, e) from None
    return path


@contextlib.contextmanager
def locked(path: str | Path, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock file at ``path``; the file is removed on every exit path.

    A process that opened the file just before its holder removed it would lock a dead inode, so after
    locking we check that the path still names what we hold, and take it again if not. ``wait=False``
    raises ``BlockingIOError`` at once when another process holds it.
    """
    path = Path(path)
    make_dir(path.parent)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield fd
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: a waiter sees a removed inode and retries
        os.close(fd)
