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

from stt.decoding import TUNED, BeamSettings, greedy_decode, make_decoder
from stt.device import autocast, model_device
from stt.features import open_split
from stt.metrics import score
from stt.train import load_run


def emissions(loaded, cache, device):
    """[(utterance indices, log-probs [B, T', V] on the host, lengths [B])] for the whole split."""
    from stt.batching import FeatureDataset, FrameBudgetBatchSampler, collate

    data = FeatureDataset(cache, loaded.tokenizer)
    sampler = FrameBudgetBatchSampler(cache.frames, loaded.run.train.batch_frames, shuffle=False)
    out = []
    with torch.no_grad():
        for b in torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate):
            with autocast(device, loaded.run.train.precision):
                logits, lens = loaded.model(b.feats.to(device), b.feat_lens.to(device))
            out.append((b.index.tolist(), logits.float().log_softmax(-1).cpu(), lens.cpu()))
    refs = [loaded.tokenizer.decode(t) for t in data.targets]
    return out, refs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run directory")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--lm", default=None, help="ARPA/KenLM file (default: DATA/lm/lm.arpa, built if absent)")
    p.add_argument("--lexicon", default=None, help="lexicon file (default: DATA/lm/lexicon.txt, or auto with --lm)")
    p.add_argument("--beam-size", type=int, default=BeamSettings.beam_size)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.lm is None:
        from search.rescore import default_lm

        args.lm, args.lexicon = default_lm(args.data)
    lexicon = args.lexicon or "auto"
    tuned = json.loads((Path(args.checkpoint) / TUNED).read_text()) if (Path(args.checkpoint) / TUNED).exists() else {}
    loaded = load_run(args.checkpoint, device=args.device)
    device = model_device(loaded.model)
    cache = open_split(args.data, args.split, loaded.frontend["spec"], device=str(device))
    audio = sum(cache.frames) / 100.0  # 100 Hz features
    t = time.perf_counter()
    batches, refs = emissions(loaded, cache, device)
    forward = time.perf_counter() - t
    with_lm = BeamSettings(beam_size=args.beam_size, lm_weight=tuned.get("lm_weight", BeamSettings.lm_weight),
                           word_score=tuned.get("word_score", BeamSettings.word_score))  # fmt: skip
    plain = BeamSettings(beam_size=args.beam_size)
    decoders = {
        "greedy": None,
        "beam, lexicon-free": make_decoder(loaded.tokenizer, settings=plain),
        # the LM at weight 0: the lexicon alone (and --lexicon auto still finds the LM's words)
        "beam + lexicon": make_decoder(loaded.tokenizer, args.lm, lexicon, BeamSettings(beam_size=args.beam_size, lm_weight=0.0)),
        "beam + lexicon + LM": make_decoder(loaded.tokenizer, args.lm, lexicon, with_lm),
    }  # fmt: skip
    print(f"{args.checkpoint} on {args.split}: {len(refs)} utterances, {audio / 60:.1f} min of audio; model forward "
          f"{forward:.1f} s (RTF {forward / audio:.4f}) on {device}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"LM {args.lm}, lexicon {lexicon}; LM weight {with_lm.lm_weight:g}, word score {with_lm.word_score:g}"
          f"{' (tuned)' if tuned else ''}, beam {args.beam_size}")  # fmt: skip
    print(f"| decoder | WER | CER | decoding s | RTF |\n|---|---|---|---|---|")
    rows = []
    for name, dec in decoders.items():
        hyps = [""] * len(refs)
        t = time.perf_counter()
        for index, log_probs, lens in batches:
            if dec is None:
                texts = [loaded.tokenizer.decode(ids) for ids in greedy_decode(log_probs, lens, loaded.tokenizer.blank)]
            else:
                texts = dec(log_probs, lens)
            for i, text in zip(index, texts):
                hyps[i] = text
        seconds = time.perf_counter() - t
        s = score(refs, hyps)
        rows.append({"decoder": name, "wer": s.wer, "cer": s.cer, "seconds": seconds, "rtf": seconds / audio})
        print(f"| {name} | {100 * s.wer:.2f}% | {100 * s.cer:.2f}% | {seconds:.2f} | {seconds / audio:.4f} |", flush=True)
    print(json.dumps({"checkpoint": args.checkpoint, "split": args.split, "audio_seconds": audio, "rows": rows}))


if __name__ == "__main__":
    main()
