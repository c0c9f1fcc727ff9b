"""Timing training steps the same way in every bench: synced, first step excluded."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from stt.core.device import sync


def time_steps(step, batches: list, device: torch.device, warmup: int = 1) -> tuple[float, float]:
    """Run ``step(batch)`` over ``(batch, audio_seconds)`` pairs; return (audio seconds, step seconds).

    The first ``warmup`` steps warm allocators, kernels and compiled graphs and are not counted. Each step
    is bracketed by device syncs, so a GPU's queued work is inside the step that queued it.
    """
    audio = secs = 0.0
    for s, (batch, dur) in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        step(batch)
        sync(device)
        if s >= warmup:
            secs += time.perf_counter() - t0
            audio += dur
    return audio, secs


def step_flops(step, batch) -> float:
    """FLOPs of one training step (forward, backward, optimizer), as torch counts them."""
    import warnings

    with warnings.catch_warnings(), FlopCounterMode(display=False) as counter:
        # its module hooks make a compiled model re-trace once, and torch warns about that
        warnings.filterwarnings("ignore", message=".*global hooks on modules.*")
        step(batch)
    return float(counter.get_total_flops())
