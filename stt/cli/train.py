"""``stt train``, ``stt eval``, ``stt transcribe``."""

from __future__ import annotations

import sys
from pathlib import Path

from stt.core.errors import CheckpointError


def _cmd_train(args) -> int:
    from stt.data.training_data import open_training_data
    from stt.train.run import hold_run_dir
    from stt.train.run_config import load_run_config

    overrides = {k: v for k, v in {"epochs": args.epochs, "seed": args.seed, "lr": args.lr}.items() if v is not None}
    run = load_run_config(args.config, overrides=overrides)
    if args.frontend:
        run.frontend = args.frontend
    out = Path(args.out or Path("results") / "runs" / Path(args.config).stem)
    if out.is_dir():
        with hold_run_dir(out):  # another training in it now: one line, before any work
            pass
    _check_previous(out, args)
    splits = {"train": args.train_split, "dev": args.dev_split, "test": args.test_split}
    data = open_training_data(args.data, run.frontend, {k: v for k, v in splits.items() if v}, device=args.device)
    with hold_run_dir(out):  # the whole run: a second `stt train --out` here at the same time is one line
        _check_previous(out, args)  # again, now that no one else can start here
        return _train(args, run, data, out)


def _check_previous(out: Path, args) -> None:
    """A finished run's best.pt is not silently replaced: --resume or --overwrite says what to do with it."""
    from stt.train.run import LOCK

    previous = sorted(p.name for p in out.iterdir() if p.name != LOCK) if out.is_dir() else []
    if previous and not (args.resume or args.overwrite):
        shown = ", ".join(previous[:4]) + (", ..." if len(previous) > 4 else "")
        raise CheckpointError(
            f"{out}: holds a previous run ({shown}); continue it with --resume, or replace it with --overwrite"
        )


def _train(args, run, data, out: Path) -> int:
    from stt.train.feasibility import InfeasibleError
    from stt.train.trainer import Trainer

    try:
        trainer = Trainer(
            run,
            data,
            out,
            device=args.device,
            max_seconds=args.max_seconds,
            checkpoint_every=args.checkpoint_every,
            log_every=args.log_every,
        )
    except InfeasibleError as e:  # a property of the config on this corpus: name the file
        raise InfeasibleError(f"{args.config}: {e}") from None
    print(
        f"training {trainer.model.config!r} on {trainer.device} "
        f"({trainer.precision}{', compiled' if trainer.compiled else ''}); "
        f"run directory {out}",
        file=sys.stderr,
    )
    res = trainer.fit(resume=args.resume)
    for h in res.history:
        print(
            f"epoch {h['epoch']:3d}  loss {h['train_loss']:.3f}  dev WER {100 * h['dev_wer']:5.1f}%  "
            f"CER {100 * h['dev_cer']:5.1f}%  {h['audio_seconds_per_second']:.0f} audio-s/s  {h['elapsed']:.0f} s"
        )
    test = f", test WER {100 * res.test_wer:.1f}% CER {100 * res.test_cer:.1f}%" if res.test_wer is not None else ""
    dev = (
        f"best dev WER {100 * res.dev_wer:.1f}% (epoch {res.best_epoch})"
        if res.dev_wer is not None
        else "no epoch finished"
    )
    print(f"{res.status}: {dev}{test}; {res.params:,} parameters; run directory {out}")
    return 0 if res.status.finished else 1


def _cmd_eval(args) -> int:
    from stt.cli.decode import decoder_from_args
    from stt.core.device import uses_bf16
    from stt.train.metrics import error_listing
    from stt.train.run import load_run

    loaded = load_run(args.checkpoint, which=args.weights, device=args.device)
    cache = loaded.features(args.data, args.split, write=False)  # eval only reads: it creates nothing
    decoder = decoder_from_args(args, args.checkpoint, loaded.tokenizer)
    scores, ids, refs, hyps = loaded.evaluator().transcribe(cache, decoder)  # as in training: the logged WER
    if args.errors:
        for row in error_listing(ids, refs, hyps)[: args.errors]:
            print(f"{row['id']}\tWER {100 * row['wer']:.0f}%\tREF: {row['ref']}\n\t\tHYP: {row['hyp']}")
    used = "bf16" if uses_bf16(loaded.device, loaded.run.train.precision) else "fp32"
    how = "greedy" if decoder is None else decoder.describe()
    print(
        f"{args.split}: WER {100 * scores.wer:.2f}%  CER {100 * scores.cer:.2f}%  "
        f"({scores.utterances} utterances, {scores.words} words; "
        f"{args.checkpoint}/{args.weights}.pt on {loaded.device}, {used}; {how})"
    )
    return 0


def _cmd_transcribe(args) -> int:
    import torch

    from stt.cli.decode import decoder_from_args
    from stt.core.device import autocast, to_host
    from stt.core.errors import DataError
    from stt.data.audio import AudioError, read_audio
    from stt.data.frontends import build_frontend
    from stt.decode.greedy import greedy_decode
    from stt.train.run import load_run

    loaded = load_run(args.checkpoint, which=args.weights, device=args.device)
    device = loaded.device
    decoder = decoder_from_args(args, args.checkpoint, loaded.tokenizer)
    for path in args.files:  # a file that is not there is bad input, said before any work (exit 2)
        if not Path(path).exists():
            raise DataError(f"{path}: no such audio file")
        if Path(path).is_dir():
            raise DataError(f"{path}: is a folder, expected an audio file")
    fe = build_frontend(loaded.frontend["spec"], str(device))
    failed = 0
    for path in args.files:
        try:
            feats = fe(read_audio(path))  # any sample rate / channel count: read_audio converts
        except AudioError as e:
            print(f"stt transcribe: error: {e}", file=sys.stderr)
            failed += 1
            continue
        with torch.no_grad(), autocast(device, loaded.run.train.precision):
            logits, lens = loaded.model(feats[None].to(device))  # [1, T', V]
        if decoder is not None:
            print(f"{path}\t{decoder(logits.float().log_softmax(-1), to_host(lens))[0]}")
            continue
        best = to_host(logits.argmax(-1))
        print(f"{path}\t{loaded.tokenizer.decode(greedy_decode(best, to_host(lens))[0])}")
    return 2 if failed else 0  # the others were transcribed; each bad one is its own line above


def add_commands(sub) -> None:
    from stt.cli.decode import add_decoder_args
    from stt.core.args import nonnegative_int, positive_float, positive_int

    t = sub.add_parser("train", help="train one run config with CTC")
    t.add_argument("--config", required=True, help="run config YAML (layers + train settings), e.g. an export")
    t.add_argument("--data", required=True, help="data folder (features are prepared on first use)")
    t.add_argument("--frontend", default=None, help="override the config's frontend (fbank | wav2vec:CKPT)")
    t.add_argument("--epochs", type=positive_int, default=None, help="override train.epochs")
    t.add_argument("--lr", type=positive_float, default=None, help="override train.lr")
    t.add_argument("--seed", type=int, default=None, help="override train.seed")
    t.add_argument("--out", default=None, help="run directory (default results/runs/CONFIG_NAME)")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in the run directory")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)")
    t.add_argument(
        "--max-seconds", type=positive_float, default=None, help="stop after the epoch that crosses this wall time"
    )
    t.add_argument(
        "--checkpoint-every", type=nonnegative_int, default=0, help="also checkpoint every N steps within an epoch"
    )
    t.add_argument(
        "--log-every",
        type=positive_int,
        default=50,
        help="read the loss every N steps (a GPU sync); logs a line then when stderr is no terminal",
    )
    for role in ("train", "dev", "test"):
        t.add_argument(
            f"--{role}-split", default=None, help=f"split name for {role} (default: the one named/prefixed '{role}')"
        )
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="WER/CER of a trained run on a split")
    e.add_argument("--checkpoint", required=True, help="run directory")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--weights", default="best", choices=["best", "last"])
    e.add_argument("--errors", type=nonnegative_int, default=0, help="list the N worst utterances")
    e.add_argument("--device", default=None)
    add_decoder_args(e)
    e.set_defaults(func=_cmd_eval)

    r = sub.add_parser("transcribe", help="transcribe audio files with a trained run")
    r.add_argument("--checkpoint", required=True, help="run directory")
    r.add_argument("files", nargs="+", help="audio files (any sample rate)")
    r.add_argument("--weights", default="best", choices=["best", "last"])
    r.add_argument("--device", default=None)
    add_decoder_args(r)
    r.set_defaults(func=_cmd_transcribe)
