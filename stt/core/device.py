"""Devices and precision, in one place.

Everything that creates a tensor takes its device from the model or batch it
meets; everything that reads a value back to the host goes through
:func:`to_host`. On a GPU each such read is a synchronisation, so the trainer
calls it every N steps, not every step. Tests drive the library on the
``meta`` device, which stands in for CUDA: a CPU tensor that meets a meta model
raises, exactly as it would on a GPU, and any hidden host read (``.item()``,
``bool(tensor)``) raises too.
"""

from __future__ import annotations

import contextlib

import torch

from stt.core.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The named device, or CUDA when there is one, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """bf16 autocast: asked for, or ``auto`` on CUDA (the CPU's bf16 kernels are slower than its fp32 ones)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: valid: {', '.join(PRECISIONS)}")
    if device.type not in ("cuda", "cpu"):
        return False  # meta and others have no autocast; they run fp32
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context of training and of evaluation: one function, so both score alike."""
    if not uses_bf16(device, precision):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_host(t: torch.Tensor) -> torch.Tensor:
    """The one place where device values come back to the CPU (a sync on a GPU)."""
    return t.detach().cpu()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_cached_memory(device: torch.device) -> None:
    """Hand the caching allocator's free blocks back (after an out-of-memory, between trials)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
