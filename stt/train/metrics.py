"""Corpus-level WER and CER (jiwer): total errors over total reference words/characters.

Not the mean of per-utterance WERs (the design note's ``np.mean``), which lets
short utterances weigh as much as long ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import jiwer


@dataclass
class Scores:
    wer: float
    cer: float
    words: int  # reference words
    utterances: int
    loss: float | None = None  # CTC loss per reference letter, when the scorer had the model's outputs


def _clean(hyps: list[str]) -> list[str]:
    # jiwer needs a non-empty hypothesis list item; an empty string is fine, None is not
    return [h if h is not None else "" for h in hyps]


def score(refs: list[str], hyps: list[str]) -> Scores:
    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"score: {len(refs)} references vs {len(hyps)} hypotheses")
    hyps = _clean(hyps)
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    n_words = words.hits + words.substitutions + words.deletions
    return Scores(wer=words.wer, cer=chars.cer, words=n_words, utterances=len(refs))


def error_listing(ids: list[str], refs: list[str], hyps: list[str]) -> list[dict]:
    """Per-utterance errors, worst first: id, WER, reference, hypothesis."""
    rows = []
    for i, r, h in zip(ids, refs, _clean(hyps)):
        rows.append({"id": i, "wer": jiwer.wer(r, h), "ref": r, "hyp": h})
    return sorted(rows, key=lambda x: (-x["wer"], x["id"]))
