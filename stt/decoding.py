"""Greedy CTC decoding: best label per frame, collapse repeats, drop blanks."""

from __future__ import annotations

import torch


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Args: logits ``[B, T, V]`` (or log-probs), lengths ``[B]``. Returns label ids per utterance."""
    best = logits.argmax(dim=-1).cpu()  # [B, T]
    out = []
    for seq, n in zip(best, lengths.tolist()):
        seq = torch.unique_consecutive(seq[:n])  # collapse repeats first: "a a _ a" -> "a _ a" -> "aa"
        out.append(seq[seq != blank].tolist())
    return out
