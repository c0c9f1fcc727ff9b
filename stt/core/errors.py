"""The one error hierarchy: what the user can fix, said in one line.

Both command lines (``stt``, ``stt-search``) catch :class:`STTError`, print its message on one line
(it names the file, line, key or option, and what was expected) and exit with status 2. Anything
else is a bug and keeps its traceback.
"""


def one_line(e: BaseException) -> str:
    """An error's message as the one line a command prints."""
    return " ".join(str(e).split()) or type(e).__name__


class STTError(Exception):
    """A problem with the user's input or files (one line, exit status 2)."""


class ConfigError(STTError, ValueError):
    """A layer config, run config, search space or option that cannot work; names the key and the valid values."""


class DataError(STTError, ValueError):
    """A data folder, split, manifest, audio file or feature cache that is missing or unusable."""


class CheckpointError(STTError, ValueError):
    """A run directory or checkpoint that is missing, is not ours, or does not fit its config."""


class StudyError(STTError, ValueError):
    """A study or storage that does not exist, cannot be opened, or is in a state the command cannot use."""


def show(value, limit: int = 60) -> str:
    """``repr(value)`` as a message shows it: cut to ``limit`` characters (the last three ``...``).

    Only as much of ``value`` is walked as is shown, so a YAML alias bomb (lists that share their parts, a
    billion leaves in a few lines) or a list that contains itself costs no more than a short value.
    """
    out, size = [], 0
    for piece in _pieces(value, limit):
        out.append(piece)
        size += len(piece)
        if size >= limit:
            break
    s = "".join(out)
    return s if len(s) < limit else s[: limit - 3] + "..."


def show_key(key, limit: int = 60) -> str:
    """A mapping key in a message: as written when it is a short printable string, else :func:`show`."""
    if isinstance(key, str) and key.isprintable() and len(key) < limit:
        return key
    return show(key, limit)


def _pieces(x, limit: int):
    """The pieces of ``repr(x)``, lazily; a string, bytes or other scalar is cut near ``limit`` before its repr."""
    if type(x) in (list, tuple) or type(x) is set and x:
        brackets = {list: "[]", tuple: "()", set: "{}"}[type(x)]
        yield brackets[0]
        for i, v in enumerate(x):
            if i:
                yield ", "
            yield from _pieces(v, limit)
        yield ",)" if type(x) is tuple and len(x) == 1 else brackets[1]
    elif type(x) is dict:
        yield "{"
        for i, (k, v) in enumerate(x.items()):
            if i:
                yield ", "
            yield from _pieces(k, limit)
            yield ": "
            yield from _pieces(v, limit)
        yield "}"
    elif isinstance(x, (str, bytes)):
        yield repr(x[: limit + 1])
    else:
        yield repr(x)[: limit + 1]
