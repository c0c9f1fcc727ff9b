"""``stt prepare synth`` and ``stt prepare features``."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("stt")


def _cmd_synth(args) -> int:
    from stt.data.synth import SynthSettings, prepare_synth

    t0 = time.time()
    settings = SynthSettings(hours=args.hours, vocab=args.vocab, seed=args.seed)
    summary = prepare_synth(args.out, settings, workers=args.workers, progress=not args.quiet)
    for split, s in summary["splits"].items():
        print(f"{split:6s} {s['utterances']:6d} utterances  {s['hours']:.3f} h")
    print(
        f"synthetic corpus ({summary['vocab_words']} words, seed {args.seed}) in {args.out}  [{time.time() - t0:.1f} s]"
    )
    return 0


def _cmd_features(args) -> int:
    from stt.core.errors import DataError
    from stt.data.features import prepare_features

    reports = prepare_features(
        args.data,
        args.frontend,
        splits=args.splits,
        progress=not args.quiet,
        max_seconds=args.max_seconds,
        part=args.shard,
    )
    usable = 0
    for r in reports:
        for s in r.skipped[: args.show_skipped]:
            print(f"  skipped {s}")
        if len(r.skipped) > args.show_skipped:
            print(f"  ... and {len(r.skipped) - args.show_skipped} more skipped")
        state = "computed" if r.computed else "cached"
        if r.part is not None:
            i, n = r.part
            ready = "the split is complete" if r.complete else "the other parts are still to run"
            state = f"part {i}/{n}: {state} {r.computed} utterances; {ready}"
        print(f"{r.split}: kept {r.kept}, skipped {len(r.skipped)}, {r.hours:.3f} h ({state}) -> {r.cache_dir}")
        usable += r.kept
    if usable == 0 and args.shard is None:  # a part may hold none of a small corpus's shards
        raise DataError(
            f"{args.data}: nothing usable left after skipping {sum(len(r.skipped) for r in reports)} utterances"
        )
    return 0


def add_commands(sub) -> None:
    from stt.core.args import PART, nonnegative_int, positive_float, positive_int
    from stt.data.corpus import MAX_SECONDS

    p = sub.add_parser("prepare", help="synthesise the built-in corpus, or compute a feature cache")
    psub = p.add_subparsers(dest="what", required=True)

    s = psub.add_parser("synth", help="English speech synthesised offline with espeak-ng (LibriSpeech layout)")
    s.add_argument("--out", required=True, help="output folder (created; train/, dev/, test/ inside)")
    s.add_argument(
        "--hours",
        type=positive_float,
        default=1.0,
        help="hours of training speech; dev and test get 10%% each (default 1)",
    )
    s.add_argument(
        "--vocab",
        type=positive_int,
        default=200,
        help="vocabulary: the N most frequent English words (default 200; >= 2000 for benchmarks)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=positive_int, default=None, help="synthesis processes (default: all cores)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_synth)

    f = psub.add_parser("features", help="compute frontend features once into DATA/.stt-cache")
    f.add_argument("--data", required=True, help="data folder (LibriSpeech layout or SPLIT.tsv/.jsonl manifests)")
    f.add_argument(
        "--frontend",
        default="fbank",
        help="fbank (default, 80 mel bins), fbank:BINS (e.g. fbank:64) or wav2vec:PATH/TO/wav2vec_large.pt",
    )
    f.add_argument("--splits", nargs="*", default=None, help="only these splits (default: all found)")
    f.add_argument(
        "--show-skipped", type=nonnegative_int, default=20, help="list at most this many skipped files per split"
    )
    f.add_argument(
        "--max-seconds",
        type=positive_float,
        default=MAX_SECONDS,
        help="skip (and name) recordings longer than this; their audio is never read (default 60)",
    )
    f.add_argument(
        "--shard",
        type=PART,
        default=None,
        metavar="I/N",
        help="compute only part I of N (0 <= I < N), e.g. one task of a Slurm array: "
        "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; the last part to finish completes the cache",
    )
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_cmd_features)
