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
from typing import Any

import yaml

from stt.core.errors import DataError, one_line

TMP_PREFIX = ".tmp-"  # temporary names start with this; readers skip them, writers remove their own

# What a YAML file the user wrote (a run config, a search space) may be. The largest shipped one is 5 KB. PyYAML
# (pure Python) parses 64 KB of the densest YAML in under a second, and the limits below keep whatever a file
# holds, aliases included, within that time and a few tens of MB.
MAX_YAML_BYTES = 64 * 1024
MAX_YAML_DEPTH = 32  # nested lists and mappings (a run config needs 8)
MAX_YAML_VALUES = 100_000  # values once every alias is expanded: no more than the file could hold written out


def read_user_text(path: str | Path, error: type[Exception] = DataError, limit: int | None = None) -> str:
    """A file the user named (a config, a space, a manifest, a transcript), as UTF-8 text.

    Every way such a file can be wrong is one line of ``error`` naming it: missing, a folder, unreadable,
    larger than ``limit`` bytes (read no further, so ``/dev/zero`` is refused too), or not UTF-8 (with the first
    bad byte and its offset, to find it with ``xxd``). One helper, so no reader of user files can forget a case
    and end in a traceback.
    """
    path = Path(path)
    try:
        if limit is None:
            return path.read_text(encoding="utf-8")
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise error(f"{path}: larger than {limit // 1024} KiB; expected a file of at most that size")
        # as read_text does: universal newlines
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
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


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing nesting deeper than :data:`MAX_YAML_DEPTH` while it composes."""

    depth = 0

    def compose_node(self, parent, index):
        if self.depth >= MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(node, sizes: dict, open_: set) -> int:
    """Values under ``node`` with every alias expanded, counted once per distinct node; stops past the limit."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.composer.ComposerError(None, None, "an alias refers to a value that contains it", node.start_mark)
    open_.add(key)
    n = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [x for pair in node.value for x in pair]
    else:
        children = ()
    for child in children:
        n += _expanded_size(child, sizes, open_)
        if n > MAX_YAML_VALUES:
            break
    open_.discard(key)
    sizes[key] = n
    return n


def parse_user_yaml(text: str, label: str, error: type[Exception] = DataError) -> Any:
    """``yaml.safe_load(text)`` for a file the user wrote; anything it cannot be is one line of ``error``.

    Besides YAML syntax: nesting deeper than :data:`MAX_YAML_DEPTH`, an alias inside its own anchor (a value
    that contains itself), aliases that expand past :data:`MAX_YAML_VALUES` values (a "billion laughs": safe_load
    keeps them shared, but whatever walks the result would expand them), and literals Python refuses (an
    integer of over 4300 digits, a 30 February).
    """
    loader = None
    try:
        loader = _BoundedLoader(text)  # checks every character: a NUL is a YAMLError already here
        node = loader.get_single_node()
        expanded = _expanded_size(node, {}, set()) if node is not None else 0
        if expanded <= MAX_YAML_VALUES:
            return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise error(f"{label}: not valid YAML: {one_line(e)}") from None
    except (ValueError, OverflowError) as e:  # a literal PyYAML parsed but Python cannot hold
        raise error(f"{label}: not valid YAML: {one_line(e)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    raise error(
        f"{label}: its aliases (*name) expand to more than {MAX_YAML_VALUES} values; write out what it repeats, "
        "or repeat less"
    )


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
    # A signal (Ctrl-C, SIGTERM) may land between any two steps: ``held`` says whether the lock is ours, and the
    # finally removes the file only then, or (not yet locked) only when no other process holds it.
    fd, held = None, False
    try:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            held = True
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            held = False
            stale, fd = fd, None
            os.close(stale)
        yield fd
    finally:
        if fd is not None and held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while still locked: a waiter sees a removed inode and retries
            os.close(fd)
        elif fd is not None:
            _drop_if_free(path, fd)


def _drop_if_free(path: Path, fd: int) -> None:
    """Close ``fd`` (opened on ``path`` but not locked yet); remove the file too when no process holds it, since
    it may be one this process just created and was interrupted before locking."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)  # another process holds it: its file
        return
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
