"""A run config: the nested layer config plus training settings and the frontend.

This is the file ``stt train --config`` reads and ``stt-search export`` writes::

    frontend: fbank
    model:
      input_proj: base
      residual: true
      layers: [...]            # the nested layer config
    train:
      epochs: 12
      lr: 0.002

A bare layer config (a YAML list) is also a run config, with default settings.
Unknown keys are errors that list the valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from stt.core.errors import show, show_key
from stt.data.frontends import feature_size_of, spec_problem
from stt.model.layer_config import (
    LayerConfig,
    LayerConfigError,
    dump_layers_yaml,
    load_layer_config,
    read_source,
    type_mismatch,
)


@dataclass
class TrainConfig:
    epochs: int = 12  # passes over the training split
    lr: float = 2e-3  # peak learning rate of AdamW
    weight_decay: float = 1e-2  # AdamW decoupled weight decay
    schedule: str = "onecycle"  # "onecycle" (linear warm-up, cosine decay) or "cosine" (warm-up, cosine)
    warmup: float = 0.1  # fraction of all steps spent warming up
    batch_frames: int = 12000  # input frames per batch (padding included): sets the batch size
    grad_clip: float = 5.0  # max global gradient norm
    seed: int = 0  # seeds weights, dropout and batch order
    patience: int = 0  # early stopping: epochs without dev-WER improvement (0 = off)
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32"; evaluation uses it too
    compile: bool | str = "auto"  # torch.compile the training step: true, false, or "auto" (on CUDA only)
    buckets_per_octave: int = 4  # when compiling: padded lengths per doubling (4: <= 25 % padding, few shapes)
    num_workers: int = 0  # DataLoader workers (features are memory-mapped; 0 is fine on CPU)
    # SpecAugment (stt/data/augment.py): masks on training batches only; 0 masks = off
    freq_masks: int = 0  # frequency bands zeroed per utterance
    freq_width: int = 15  # widest frequency band, in feature bins
    time_masks: int = 0  # time spans zeroed per utterance
    time_width: float = 0.05  # widest time span, as a fraction of the utterance's length

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_type(f"train.{f.name}", getattr(self, f.name), f.type)
        _check_choice("train.schedule", self.schedule, ("onecycle", "cosine"))
        _check_choice("train.precision", self.precision, ("auto", "bf16", "fp32"))
        _check_choice("train.compile", self.compile, (True, False, "auto"))
        _check_choice("train.buckets_per_octave", self.buckets_per_octave, (1, 2, 4, 8, 16))
        if not 0 <= self.seed < 2**63:  # numpy takes no negative seed, torch none of 2**64 or more
            raise LayerConfigError(f"train.seed: must be in [0, 2**63), got {self.seed}")
        for name in ("epochs", "batch_frames"):
            if getattr(self, name) < 1:
                raise LayerConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise LayerConfigError(f"train.lr: must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise LayerConfigError(f"train.warmup: must be in [0, 1), got {self.warmup}")
        for name in ("patience", "num_workers", "freq_masks", "freq_width", "time_masks"):
            if getattr(self, name) < 0:
                raise LayerConfigError(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.time_width <= 0.5:
            raise LayerConfigError(f"train.time_width: must be in [0, 0.5] (of the utterance), got {self.time_width}")


def check_type(key: str, value, annotation: str) -> None:
    """A training setting of the wrong kind is an error naming the key (see :func:`type_mismatch`)."""
    expected = type_mismatch(value, annotation)
    if expected:
        raise LayerConfigError(f"{key}: {show(value)} is not {expected}")


def _check_choice(key, value, choices):
    # exact type too: YAML's `true` must not pass as 1, nor 1 as `true`
    if not any(value == c and type(value) is type(c) for c in choices):
        raise LayerConfigError(f"{key}: {show(value)} is not one of {', '.join(map(str, choices))}")


@dataclass
class RunConfig:
    layers: LayerConfig  # the nested layer config, normalised
    input_proj: str | None = "base"  # "base" or None
    residual: bool = True  # residual around shape-preserving layers
    frontend: str = "fbank"  # "fbank" (80 mel bins), "fbank:N" (N bins) or "wav2vec:CHECKPOINT"
    train: TrainConfig = field(default_factory=TrainConfig)
    input_size: int = 80  # feature size for `describe` when no data is given; training uses the frontend's

    def to_dict(self) -> dict:
        return {
            "frontend": self.frontend,
            "model": {"input_proj": self.input_proj, "residual": self.residual, "layers": self.layers.to_list()},
            "train": dataclasses.asdict(self.train),
        }

    def to_yaml(self) -> str:
        """YAML with the layers one branch per line (readable diffs between trials)."""
        head = {"frontend": self.frontend, "train": dataclasses.asdict(self.train)}
        text = yaml.safe_dump(head, sort_keys=False)
        text += (
            f"model:\n  input_proj: {self.input_proj or 'null'}\n  residual: {str(self.residual).lower()}\n  layers:\n"
        )
        text += "".join("    " + line + "\n" for line in dump_layers_yaml(self.layers.to_list()).splitlines())
        return text

    def save(self, path: str | Path) -> None:
        from stt.core.files import write_text

        write_text(path, self.to_yaml())


_TOP_KEYS = ("frontend", "model", "train")
_MODEL_KEYS = ("input_proj", "residual", "layers")


def load_run_config(src, overrides: dict | None = None) -> RunConfig:
    """Read a run config (path, YAML string or mapping) or a bare layer config."""
    obj, label = read_source(src)
    prefix = f"{label}: " if label != "config" else ""
    if isinstance(obj, list):
        try:
            return RunConfig(layers=load_layer_config(obj))
        except LayerConfigError as e:
            raise LayerConfigError(f"{prefix}{e}") from None
    if not isinstance(obj, dict):
        raise LayerConfigError(f"{prefix}expected a mapping with {', '.join(_TOP_KEYS)} or a list of layers")
    for k in obj:
        if k not in _TOP_KEYS:
            raise LayerConfigError(f"{prefix}{show_key(k)}: unknown key; valid: {', '.join(_TOP_KEYS)}")
    model = obj.get("model")
    if not isinstance(model, dict) or "layers" not in model:
        raise LayerConfigError(f"{prefix}model.layers: missing (the nested layer config)")
    for k in model:
        if k not in _MODEL_KEYS:
            raise LayerConfigError(f"{prefix}model.{show_key(k)}: unknown key; valid: {', '.join(_MODEL_KEYS)}")
    valid = [f.name for f in dataclasses.fields(TrainConfig)]
    train = obj.get("train") or {}
    if not isinstance(train, dict):
        raise LayerConfigError(f"{prefix}train: expected a mapping of {', '.join(valid)}, got {show(train)}")
    train = {**train, **(overrides or {})}
    for k in train:
        if k not in valid:
            raise LayerConfigError(f"{prefix}train.{show_key(k)}: unknown key; valid: {', '.join(valid)}")
    try:
        tc = TrainConfig(**train)
        layers = load_layer_config(model["layers"])
    except LayerConfigError as e:
        raise LayerConfigError(f"{prefix}{e}") from None
    input_proj = model.get("input_proj", "base")
    if input_proj not in ("base", None):
        raise LayerConfigError(f"{prefix}model.input_proj: {show(input_proj)} is not one of base, null")
    frontend = obj.get("frontend", "fbank")
    problem = spec_problem(frontend)
    if problem:
        raise LayerConfigError(f"{prefix}frontend: {show(frontend)}: {problem}")
    residual = model.get("residual", True)
    if not isinstance(residual, bool):  # bool("false") is True: a string must not turn residuals on
        raise LayerConfigError(f"{prefix}model.residual: {show(residual)} is not one of true, false")
    size = feature_size_of(frontend) or RunConfig.input_size
    return RunConfig(
        layers=layers, input_proj=input_proj, residual=residual, frontend=frontend, train=tc, input_size=size
    )
