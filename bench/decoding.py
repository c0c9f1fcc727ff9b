"""Greedy vs beam search (lexicon, LM) on a trained run: WER, CER and decoding speed, in one table.

    python bench/decoding.py --checkpoint results/runs/small --data data/synth [--lm data/synth/lm/lm.arpa]

The model's log-probabilities for the split are computed once (their time is reported apart: it
is the model's, not the decoder's). Each decoder then decodes them all; its real-time factor is
its decoding time over the split's audio duration, on this machine's cores (flashlight's decoder
runs on one). Rows: greedy; beam, lexicon-free; beam + lexicon; beam + lexicon + LM, at the
default beam (50) and the run's tuned LM weight and word score when `stt tune-decoder` saved them.
Without ``--lm``, the corpus's own lexicon and unigram LM are built (or reused) in DATA/lm.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from stt.decode.beam import TUNED, BeamSettings, make_decoder
from stt.decode.greedy import greedy_decode
from stt.train.evaluation import decode_batches
from stt.train.metrics import score
from stt.train.run import load_run


def homophones(words: list[str]) -> dict[str, str]:
    """word -> one spelling per espeak-ng pronunciation: the built-in corpus cannot tell these apart
    from audio ("their"/"there", "to"/"two"/"too"), and its random word order gives an LM no context."""
    import ctypes

    import espeakng_loader

    lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
    if lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0) <= 0:
        raise RuntimeError("espeak-ng failed to initialise")
    lib.espeak_SetVoiceByName(b"en")
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    by_sound: dict[str, list[str]] = {}
    for w in words:
        text = ctypes.c_char_p(w.encode())
        sound = lib.espeak_TextToPhonemes(ctypes.pointer(text), 1, 0).decode().strip().replace("'", "").replace(",", "")
        by_sound.setdefault(sound, []).append(w)
    return {w: min(group) for group in by_sound.values() if len(group) > 1 for w in group}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run directory")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--lm", default=None, help="ARPA/KenLM file (default: DATA/lm/lm.arpa, built if absent)")
    p.add_argument("--lexicon", default=None, help="lexicon file (default: DATA/lm/lexicon.txt, or auto with --lm)")
    p.add_argument("--beam-size", type=int, default=BeamSettings.beam_size)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--homophones",
        action="store_true",
        help="also score with words espeak-ng pronounces alike merged (the built-in corpus's floor)",
    )
    args = p.parse_args()
    if args.lm is None:
        from stt.decode.lm import corpus_lm

        args.lm, args.lexicon = corpus_lm(args.data)
    lexicon = args.lexicon or "auto"
    tuned = json.loads((Path(args.checkpoint) / TUNED).read_text()) if (Path(args.checkpoint) / TUNED).exists() else {}
    loaded = load_run(args.checkpoint, device=args.device)
    cache = loaded.features(args.data, args.split)
    audio = sum(cache.frames) / 100.0  # 100 Hz features
    t = time.perf_counter()
    batches, refs = loaded.evaluator().log_probs(cache)
    forward = time.perf_counter() - t
    with_lm = BeamSettings(
        beam_size=args.beam_size,
        lm_weight=tuned.get("lm_weight", BeamSettings.lm_weight),
        word_score=tuned.get("word_score", BeamSettings.word_score),
    )
    plain = BeamSettings(beam_size=args.beam_size)
    decoders = {
        "greedy": None,
        "beam, lexicon-free": make_decoder(loaded.tokenizer, settings=plain),
        # the LM at weight 0: the lexicon alone (and --lexicon auto still finds the LM's words)
        "beam + lexicon": make_decoder(
            loaded.tokenizer, args.lm, lexicon, BeamSettings(beam_size=args.beam_size, lm_weight=0.0)
        ),
        "beam + lexicon + LM": make_decoder(loaded.tokenizer, args.lm, lexicon, with_lm),
    }
    print(
        f"{args.checkpoint} on {args.split}: {len(refs)} utterances, {audio / 60:.1f} min of audio; model forward "
        f"{forward:.1f} s (RTF {forward / audio:.4f}) on {loaded.device}, {torch.get_num_threads()} threads"
    )
    print(
        f"LM {args.lm}, lexicon {lexicon}; LM weight {with_lm.lm_weight:g}, word score {with_lm.word_score:g}"
        f"{' (tuned)' if tuned else ''}, beam {args.beam_size}"
    )
    merge = {}
    if args.homophones:
        merge = homophones(sorted({w for r in refs for w in r.split()}))
        groups = sorted({tuple(sorted(w for w in merge if merge[w] == m)) for m in merge.values()})
        print(f"homophones (merged in the last column): {', '.join('/'.join(g) for g in groups)}")
    print(f"| decoder | WER | CER | decoding s | RTF |{' WER, homophones merged |' if merge else ''}")
    print(f"|---|---|---|---|---|{'---|' if merge else ''}")
    rows = []
    for name, dec in decoders.items():
        if dec is None:

            def dec(log_probs, lens):
                return [loaded.tokenizer.decode(ids) for ids in greedy_decode(log_probs, lens, loaded.tokenizer.blank)]

        t = time.perf_counter()
        hyps = decode_batches(batches, dec, len(refs))
        seconds = time.perf_counter() - t
        s = score(refs, hyps)
        row = {"decoder": name, "wer": s.wer, "cer": s.cer, "seconds": seconds, "rtf": seconds / audio}
        extra = ""
        if merge:

            def merged(texts):
                return [" ".join(merge.get(w, w) for w in t.split()) for t in texts]

            row["wer_homophones_merged"] = score(merged(refs), merged(hyps)).wer
            extra = f" {100 * row['wer_homophones_merged']:.2f}% |"
        rows.append(row)
        print(
            f"| {name} | {100 * s.wer:.2f}% | {100 * s.cer:.2f}% | {seconds:.2f} | {seconds / audio:.4f} |{extra}",
            flush=True,
        )
    print(json.dumps({"checkpoint": args.checkpoint, "split": args.split, "audio_seconds": audio, "rows": rows}))


if __name__ == "__main__":
    main()
