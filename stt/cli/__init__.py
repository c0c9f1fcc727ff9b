"""The ``stt`` command line: describe, prepare, train, eval, transcribe, lm build, tune-decoder."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from stt.cli import data, decode, describe, train
from stt.core.args import OneLineParser
from stt.core.errors import STTError, one_line


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="stt", description="CTC speech recognisers from nested block configs.")
    sub = p.add_subparsers(dest="command", required=True)

    for commands in (describe, data, train, decode):  # each command lives beside its kin
        commands.add_commands(sub)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``kill``), raised where the command is, as Ctrl-C is: training checkpoints, and every
    lock and temporary file goes with the process (the default action would kill it before any cleanup)."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    previous = signal.SIG_DFL if main_thread and previous is None else previous  # set outside Python: the default
    try:
        rc = args.func(args)
    except STTError as e:
        print(f"stt {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        killed = isinstance(e, Terminated)
        print(f"stt {args.command}: {'terminated' if killed else 'interrupted'}", file=sys.stderr)
        return 143 if killed else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
