"""What a model costs: parameters, forward GFLOPs per second of input, stride and receptive field.

One home for these figures: ``stt describe`` prints them, the trainer records them in ``result.json``, and
a search checks its budgets (``--max-params``, ``--max-gflops``) against them before training anything.
:func:`measure` builds the model on the ``meta`` device, so it needs no weights and costs milliseconds
whatever the model's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from stt.model.network import STTModel, build_model


@dataclass(frozen=True)
class ModelSize:
    params: int  # parameters of the built model, output projection included
    gflops_per_second: float  # forward GFLOPs per second of input audio


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_gflops_per_second(model: STTModel, frames_per_second: int = 100, seconds: int = 10) -> float:
    """Forward GFLOPs for one second of input at ``frames_per_second`` (counted by torch, on the model's device)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    p = next(model.parameters())  # the probe lives where the model does (CPU, CUDA, meta)
    x = torch.zeros(1, frames_per_second * seconds, model.input_size, device=p.device, dtype=p.dtype)  # [1, T, F]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / seconds / 1e9


def measure(run, feature_size: int, vocab_size: int | None, frames_per_second: int = 100) -> ModelSize:
    """Parameters and GFLOPs of the model ``run`` describes, built on ``meta`` (shapes only).

    Args:
        run: a run config (``layers``, ``input_proj``, ``residual``).
        feature_size: the frontend's feature size F.
        vocab_size: letters of the output projection (None: no projection).
        frames_per_second: the frontend's frame rate.
    """
    with torch.device("meta"):
        model = build_model(run, feature_size, vocab_size)
    return ModelSize(count_parameters(model), forward_gflops_per_second(model, frames_per_second))


def describe(model: STTModel, frames_per_second: int = 100) -> dict:
    """Parameters, total stride, receptive field and forward GFLOPs per second of input."""
    cfg = model.config
    return {
        "parameters": count_parameters(model),
        "layers": len(cfg.layers),
        "width": cfg.in_width,
        "output_width": cfg.out_width,
        "total_stride": cfg.total_stride,
        "output_rate_hz": frames_per_second / cfg.total_stride,
        "receptive_field_frames": cfg.receptive_field,
        "gflops_per_second": forward_gflops_per_second(model, frames_per_second),
    }
