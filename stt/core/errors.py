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
