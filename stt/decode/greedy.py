"""Greedy CTC decoding: the best label per frame, repeats collapsed, blanks dropped."""

from __future__ import annotations

import torch


def greedy_decode(scores: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Label ids per utterance.

    Args:
        scores: logits or log-probs ``[B, T, V]``, or the best label per frame ``[B, T]``
            (already argmax-ed on the device, so only ids cross to the host).
        lengths: real output frames ``[B]``.
    """
    best = scores.argmax(dim=-1) if scores.dim() == 3 else scores
    best = best.cpu()  # [B, T]
    out = []
    for seq, n in zip(best, lengths.tolist()):
        seq = torch.unique_consecutive(seq[:n])  # collapse repeats first: "a a _ a" -> "a _ a" -> "aa"
        out.append(seq[seq != blank].tolist())
    return out
