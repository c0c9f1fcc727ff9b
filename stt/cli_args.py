"""argparse pieces shared by both command lines (``stt``, ``stt-search``): one-line errors and checked numbers."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line naming it, not the whole usage block (``--help`` still shows it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= {low}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--epochs 0`` is an error, not "use the default")."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _integer(text, 0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g}: expected a number > 0")
    return value
