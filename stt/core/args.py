"""argparse pieces shared by both command lines (``stt``, ``stt-search``): one-line errors and checked values."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line naming it, not the whole usage block (``--help`` still shows it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Kind:
    """What a value must be: one rule for a flag's text (an argparse ``type``) and for a value given in Python."""

    noun: str  # what it is, for messages: "an integer"
    parse: Callable[[str], Any]  # a flag's text -> a value (ValueError: not a `noun` at all)
    ok: Callable[[Any], bool]  # whether a value is allowed
    bound: str = ""  # the rule beyond the noun, for messages: ">= 1"

    @property
    def expected(self) -> str:
        return f"{self.noun} {self.bound}".strip()

    def __call__(self, text: str):
        try:
            value = self.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.noun}") from None
        if not self.ok(value):
            shown = f"{value:g}" if isinstance(value, float) else text if isinstance(value, tuple) else str(value)
            raise argparse.ArgumentTypeError(f"{shown}: expected {self.expected}")
        return value


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


INTEGER = Kind("an integer", int, _integer)
POSITIVE_INT = Kind("an integer", int, lambda v: _integer(v) and v >= 1, ">= 1")  # `--epochs 0` is an error
NONNEGATIVE_INT = Kind("an integer", int, lambda v: _integer(v) and v >= 0, ">= 0")
POSITIVE_FLOAT = Kind("a number", float, lambda v: _number(v) and v > 0, "> 0")
NONNEGATIVE_FLOAT = Kind("a number", float, lambda v: _number(v) and v >= 0, ">= 0")


def _part(text: str) -> tuple[int, int]:
    i, slash, n = text.partition("/")
    if not slash or not i.strip().isdigit() or not n.strip().isdigit():
        raise ValueError(text)
    return int(i), int(n)


# one part of a job split N ways (`--shard I/N`, e.g. a Slurm array's $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)
PART = Kind("I/N", _part, lambda v: 0 <= v[0] < v[1], "with 0 <= I < N")

# argparse types, by the names the commands use
positive_int, nonnegative_int, positive_float = POSITIVE_INT, NONNEGATIVE_INT, POSITIVE_FLOAT
