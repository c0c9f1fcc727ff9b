"""The ``stt`` command line: describe, prepare, train, eval, transcribe, lm build, tune-decoder."""

from __future__ import annotations

import argparse
import logging
import sys

from stt.cli import data, decode, describe, train
from stt.core.args import OneLineParser
from stt.core.errors import STTError, one_line


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="stt", description="CTC speech recognisers from nested block configs.")
    sub = p.add_subparsers(dest="command", required=True)

    for commands in (describe, data, train, decode):  # each command lives beside its kin
        commands.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except STTError as e:
        print(f"stt {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stt {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
