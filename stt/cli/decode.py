"""``stt lm build``, ``stt tune-decoder``, and the decoder options of ``stt eval`` / ``stt transcribe``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_decoder_args(p) -> None:
    """--decoder and the beam options (defaults: those `stt tune-decoder` saved in the run, else BeamSettings')."""
    p.add_argument("--decoder", default="greedy", choices=["greedy", "beam"])
    p.add_argument("--lm", default=None, help="ARPA file or KenLM binary (beam; default: the run's tuned one, if any)")
    p.add_argument("--lexicon", default=None, help="lexicon file, or auto: the LM's words (beam; none: lexicon-free)")
    p.add_argument("--beam-size", type=_positive_int, default=None, help="hypotheses kept per frame (default 50)")
    p.add_argument("--lm-weight", type=float, default=None, help="LM weight (default: tuned, else 1.0)")
    p.add_argument("--word-score", type=float, default=None, help="score added per word (default: tuned, else 0)")
    p.add_argument("--unk-score", type=float, default=None, help="score of a word outside the lexicon (default -inf)")


def _positive_int(text: str) -> int:
    from stt.core.args import positive_int

    return positive_int(text)


def decoder_from_args(args, run_dir: str | Path, tokenizer):
    """None for greedy; a BeamDecoder for ``--decoder beam``, with the run's tuned settings under the flags."""
    if args.decoder == "greedy":
        for flag in ("lm", "lexicon", "beam_size", "lm_weight", "word_score", "unk_score"):
            if getattr(args, flag) is not None:
                from stt.core.errors import ConfigError

                raise ConfigError(f"--{flag.replace('_', '-')} is a beam-search option: add --decoder beam")
        return None
    from stt.decode.beam import BeamSettings, make_decoder, read_tuned

    tuned = read_tuned(run_dir)
    lm = args.lm or tuned.get("lm")
    lexicon = args.lexicon or tuned.get("lexicon")
    s = BeamSettings()
    for key in ("beam_size", "lm_weight", "word_score", "unk_score"):
        value = getattr(args, key)
        if value is None and (args.lm is None or args.lm == tuned.get("lm")):  # tuned values belong to their LM
            value = tuned.get(key)
        if value is not None:
            setattr(s, key, type(getattr(s, key))(value))
    return make_decoder(tokenizer, lm, lexicon, s)


def _cmd_lm_build(args) -> int:
    from stt.decode.lm import build_lm

    built = build_lm(args.data, args.order, args.split, args.out)
    print(
        f"{built.split}: {built.sentences} sentences, {built.words} words -> "
        f"{built.lexicon}, {built.lm} (order {args.order})"
    )
    return 0


def _cmd_tune(args) -> int:
    """Fit the LM weight and word score on dev with a small Optuna study; save them in the run directory."""
    import optuna

    from stt.core.files import write_text
    from stt.decode.beam import TUNED, BeamSettings, make_decoder
    from stt.train.evaluation import decode_batches
    from stt.train.metrics import score
    from stt.train.run import load_run

    loaded = load_run(args.checkpoint, which=args.weights, device=args.device)
    cache = loaded.features(args.data, args.split)
    make_decoder(loaded.tokenizer, args.lm, args.lexicon)  # checks the files before any decoding
    evaluator = loaded.evaluator()
    batches, refs = evaluator.log_probs(cache)

    def objective(trial: optuna.Trial) -> float:
        s = BeamSettings(
            beam_size=args.beam_size,
            lm_weight=trial.suggest_float("lm_weight", 0.0, 8.0),
            word_score=trial.suggest_float("word_score", -3.0, 3.0),
        )
        decoder = make_decoder(loaded.tokenizer, args.lm, args.lexicon, s)
        return score(refs, decode_batches(batches, decoder, len(refs))).wer

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.enqueue_trial({"lm_weight": 1.0, "word_score": 0.0})  # the untuned default competes too
    greedy = evaluator.score(cache).wer
    study.optimize(objective, n_trials=args.trials, show_progress_bar=sys.stderr.isatty())
    best = study.best_trial
    tuned = {
        "lm": str(Path(args.lm).resolve()) if args.lm else None,
        "lexicon": args.lexicon if args.lexicon in (None, "auto") else str(Path(args.lexicon).resolve()),
        "beam_size": args.beam_size,
        **best.params,
        f"{args.split}_wer_beam": best.value,
        f"{args.split}_wer_greedy": greedy,
    }
    write_text(Path(args.checkpoint) / TUNED, json.dumps(tuned, indent=1))
    print(
        f"{args.split}: WER greedy {100 * greedy:.2f}% -> beam {100 * best.value:.2f}% with LM weight "
        f"{best.params['lm_weight']:.2f}, word score {best.params['word_score']:.2f} ({args.trials} trials); "
        f"saved in {Path(args.checkpoint) / TUNED}"
    )
    return 0


def add_commands(sub) -> None:
    from stt.core.args import positive_int

    lm = sub.add_parser("lm", help="language models for beam-search decoding")
    lsub = lm.add_subparsers(dest="lm_command", required=True)
    b = lsub.add_parser("build", help="a lexicon and an ARPA n-gram LM from a corpus's training transcripts")
    b.add_argument("--data", required=True, help="data folder")
    b.add_argument(
        "--order",
        type=positive_int,
        default=1,
        help="n-gram order (default 1: the built-in corpus's sentences are random word sequences; 3-4 for real text)",
    )
    b.add_argument("--split", default=None, help="training split (default: the one named/prefixed 'train')")
    b.add_argument("--out", default=None, help="output folder (default DATA/lm)")
    b.set_defaults(func=_cmd_lm_build)

    t = sub.add_parser(
        "tune-decoder", help="fit the beam decoder's LM weight and word score on dev; saved with the run"
    )
    t.add_argument("--checkpoint", required=True, help="run directory")
    t.add_argument("--data", required=True)
    t.add_argument("--lm", required=True, help="ARPA file or KenLM binary")
    t.add_argument("--lexicon", default="auto", help="lexicon file, or auto (the LM's words; the default)")
    t.add_argument("--split", default="dev")
    t.add_argument("--trials", type=positive_int, default=30)
    t.add_argument("--beam-size", type=positive_int, default=50)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--weights", default="best", choices=["best", "last"])
    t.add_argument("--device", default=None)
    t.set_defaults(func=_cmd_tune)
