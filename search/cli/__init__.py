"""The ``stt-search`` command line: launch, resume, worker, export, compare, demo, storage-proxy."""

from __future__ import annotations

import logging
import sys
import warnings

from search.cli.parser import build_parser


def _not_interrupted(record: logging.LogRecord) -> bool:
    # Ctrl-C, the study's time budget and a trial taken over by another worker are not errors: the study's own
    # one-line log says what happened
    from search.objective import OutOfTime, TakenOver

    return not (record.exc_info and isinstance(record.exc_info[1], (KeyboardInterrupt, OutOfTime, TakenOver)))


def _said_by_the_study(record: logging.LogRecord) -> bool:
    """Optuna's "Trial N failed with ..." warning: the study's own line for that trial says it, with the reason
    (one voice in the terminal, not Optuna's ``[W ...]`` beside it)."""
    return not (record.name == "optuna.study._optimize" and record.getMessage().startswith("Trial "))


def main(argv: list[str] | None = None) -> int:
    from stt.core.errors import STTError, one_line

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna logs a trial stopped by Ctrl-C as a failure with its whole traceback; the one line below says it.
    # On its handlers: a logger's own filters do not see records from its children (optuna.study._optimize).
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_not_interrupted)
        handler.addFilter(_said_by_the_study)
    # Optuna flags heartbeats/retries as experimental and importance estimates on few trials; the CLI says what matters
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", module="optuna.importance")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except STTError as e:
        print(f"stt-search {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        from search.storage import disk_full

        full = disk_full(e)
        if full is None:
            raise  # a bug: its traceback is the report
        study = getattr(args, "study", None)
        again = f"`stt-search resume --study {study}` continues" if study else "run the command again"
        print(
            f"stt-search {args.command}: error: no space left ({full}); what ran is checkpointed: free some space, "
            f"then {again}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            f"stt-search {args.command}: interrupted; the current trial is checkpointed and waits: any worker or "
            "`stt-search resume` continues it",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
