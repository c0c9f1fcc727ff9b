"""SpecAugment (Park et al., 2019): zero random frequency bands and time spans of a training batch.

Features are normalised per utterance (mean 0), so a zeroed span is an "average" frame, not silence.
Masks are drawn on the batch's device with torch's generator, so a step makes no host sync and a
resumed run (whose RNG state is checkpointed) draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import torch


def _spans(n: int, width: torch.Tensor, size: torch.Tensor, axis: int, device) -> torch.Tensor:
    """``[B, axis]`` bool: ``n`` spans per row, each of width uniform in [0, width] inside the row's ``size``.

    Args:
        width: ``[B]`` widest span per row.
        size: ``[B]`` valid extent per row (real frames, or the feature size).
    """
    B = size.numel()
    w = (torch.rand(B, n, device=device) * (width[:, None].float() + 1)).floor()  # [B, n] in [0, width]
    w = torch.minimum(w, size[:, None].float())
    start = (torch.rand(B, n, device=device) * (size[:, None].float() - w + 1)).floor()  # [B, n]
    pos = torch.arange(axis, device=device).float()  # [axis]
    inside = (pos >= start[..., None]) & (pos < (start + w)[..., None])  # [B, n, axis]
    return inside.any(dim=1)  # [B, axis]


def spec_augment(
    feats: torch.Tensor,
    lengths: torch.Tensor | None,
    freq_masks: int,
    freq_width: int,
    time_masks: int,
    time_width: float,
) -> torch.Tensor:
    """A masked copy of a batch.

    Args:
        feats: ``[B, T, F]`` features.
        lengths: ``[B]`` real frames, or None when no row is padded.
        freq_masks, freq_width: bands per utterance, and the widest band in feature bins.
        time_masks, time_width: spans per utterance, and the widest span as a fraction of the
            utterance's real length (adaptive masking: short utterances lose as much, in proportion).
    Returns:
        ``[B, T, F]``, the input untouched where no mask falls.
    """
    B, T, F = feats.shape
    dev = feats.device
    keep = torch.ones(B, T, F, dtype=torch.bool, device=dev)
    if freq_masks:
        size = torch.full((B,), F, device=dev)
        keep &= ~_spans(freq_masks, torch.full((B,), freq_width, device=dev), size, F, dev)[:, None, :]
    if time_masks:
        size = lengths.to(dev) if lengths is not None else torch.full((B,), T, device=dev)
        keep &= ~_spans(time_masks, (size.float() * time_width).floor(), size, T, dev)[:, :, None]
    return feats * keep
