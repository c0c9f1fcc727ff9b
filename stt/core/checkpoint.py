"""Checkpoints are data: loaded without running code, saved whole or not at all.

Our checkpoints hold tensors, numbers, strings, lists and dicts (RNG states are byte tensors), so they
load with ``weights_only=True``: a pickle that names any other global - the way a malicious file runs
code - is refused with one line naming the file. Foreign checkpoints (fairseq's wav2vec) load the
same way with an explicit allow-list of the few plain classes they hold.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch

from stt.core.errors import CheckpointError
from stt.core.files import atomic_path


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary name, then rename: a killed save leaves the previous checkpoint."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:
            torch.save(state, fh)  # through a Python file, so a full disk is an OSError with its errno
        except RuntimeError as e:  # torch's writer re-raises the file's error as its own
            if isinstance(e.__context__, OSError):
                raise e.__context__ from None
            raise


def load_checkpoint(path: str | Path, keys: Iterable[str] = (), allow: Iterable[type] = ()) -> dict:
    """Load a checkpoint dict on the CPU without executing anything in it.

    Args:
        path: the ``.pt`` file.
        keys: top-level keys it must have.
        allow: extra plain classes the pickle may construct (``argparse.Namespace`` for fairseq).
    Returns:
        The checkpoint dict.
    Raises:
        CheckpointError: missing, truncated, not a torch checkpoint, holding code or other objects,
            or missing one of ``keys``; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with torch.serialization.safe_globals(list(allow)):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message names the refused global (e.g. "GLOBAL posix.system"); keep only that part
        what = re.search(r"GLOBAL ([\w.]+)", str(e))
        if what:
            raise CheckpointError(
                f"{path}: refused to load: it would call {what[1]} (code or an object, not weights; "
                "a checkpoint should hold only tensors and plain data)"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (not made by torch.save, or damaged)") from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        zipfile.BadZipFile,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
    ) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, damaged or not made by torch.save: {_first_line(e)[:80]})"
        ) from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(ck).__name__}, expected a dict)")
    missing = [k for k in keys if k not in ck]
    if missing:
        raise CheckpointError(
            f"{path}: not a checkpoint of this kind (missing {', '.join(missing)}; "
            f"has {', '.join(map(str, list(ck)[:8]))})"
        )
    return ck


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
