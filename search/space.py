"""Search spaces: a YAML file of choices -> define-by-run sampling of run configs.

A space file (``spaces/small.yaml``)::

    frontend: fbank
    width: [96, 128]                    # model width (channels)
    layers: {low: 2, high: 4}           # number of layers
    layer:
      stride: [1, 2]                    # per layer; clamped to keep the total stride feasible
      branches: {low: 1, high: 3}       # parallel branches per layer
      d_ff: [1, 2]                      # merge feed-forward width, as a multiple of the concatenated width
    branch:
      type: [conv_block, separable_conv_block, attention_conv_block, conv_attention_conv_block]
      kernel: [3, 5, 7]
      dilation: [1, 2]
      glu: [false, true]
      heads: [2, 4, 8]                  # snapped down to a divisor of the width
      dropout: {low: 0.0, high: 0.2}
    train:
      lr: {low: 0.001, high: 0.006, log: true}
      batch_frames: [12000]
      epochs: 6                         # a scalar is fixed, not searched

A list is a categorical choice, ``{low, high}`` an int (both ints) or float
range (``log: true`` for log scale), a scalar is fixed. Parameter names are
stable paths: ``width``, ``layers``, ``layer2.stride``, ``layer2.branches``,
``layer2.branch1.type``, ``layer2.branch1.kernel``, ``train.lr``.

Every sample validates and is feasible: a layer's stride is set to 1 when it
would take the total stride past ``max_total_stride`` (from the corpus), the
heads are snapped to a divisor of the width, an ``attention_conv_block`` (which
cannot stride) in a strided layer becomes a ``conv_attention_conv_block``, and
kernel/dilation pairs that cannot keep "same" length get an odd kernel.
"""

from __future__ import annotations

from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stt.blocks import BLOCKS
from stt.layer_config import load_layer_config
from stt.run_config import RunConfig, TrainConfig, check_type
from stt.errors import ConfigError


class SpaceError(ConfigError):
    """An invalid space file (the message names the file and key)."""


_SCHEMA = {
    "frontend": None, "width": None, "layers": None, "max_total_stride": None,
    "layer": {"stride": None, "branches": None, "d_ff": None},
    "branch": {"type": None, "kernel": None, "dilation": None, "glu": None, "heads": None, "dropout": None},
    "train": {k: None for k in TrainConfig.__dataclass_fields__},
}  # fmt: skip
_STRIDABLE = ("conv_block", "separable_conv_block", "conv_attention_conv_block")


@dataclass
class Space:
    spec: dict
    name: str
    text: str  # the YAML as read: stored with the study so resume samples the same space

    def param(self, key: str):
        node = self.spec
        for part in key.split("."):
            node = node[part]
        return node


# what each searched key's values must be (train.* keys take their TrainConfig field's type)
_KINDS = {
    "width": "count", "layers": "count", "max_total_stride": "count", "frontend": "text",
    "layer.stride": "count", "layer.branches": "count", "layer.d_ff": "positive",
    "branch.type": "text", "branch.kernel": "count", "branch.dilation": "count", "branch.heads": "count",
    "branch.glu": "flag", "branch.dropout": "fraction",
}  # fmt: skip
_KIND_CHECKS = {
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "positive": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0"),
    "fraction": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "a number in [0, 1)"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "text": (lambda v: isinstance(v, str), "a string"),
}


def _check_dist(value, where: str, key: str) -> None:
    if isinstance(value, list):
        if not value:
            raise SpaceError(f"{where}: an empty list of choices")
        candidates = value
    elif isinstance(value, dict):
        extra = set(value) - {"low", "high", "log"}
        if extra or "low" not in value or "high" not in value:
            raise SpaceError(f"{where}: a range needs exactly low, high (and optional log); got {sorted(value)}")
        candidates = [value["low"], value["high"]]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in candidates):
            raise SpaceError(f"{where}: a range's low and high must be numbers, got {candidates}")
        if value["low"] > value["high"]:
            raise SpaceError(f"{where}: low {value['low']} > high {value['high']}")
        if not isinstance(value.get("log", False), bool):
            raise SpaceError(f"{where}.log: {value['log']!r} is not true or false")
    elif isinstance(value, (int, float, str, bool)) or value is None:
        candidates = [value]
    else:
        raise SpaceError(f"{where}: expected a list, a {{low, high}} range or a scalar, got {type(value).__name__}")
    for v in candidates:
        if key.startswith("train."):
            try:
                check_type(key, v, TrainConfig.__dataclass_fields__[key[len("train.") :]].type)
            except ConfigError as e:
                raise SpaceError(f"{where}: {str(e).split(': ', 1)[1]}") from None
        elif key in _KINDS:
            ok, expected = _KIND_CHECKS[_KINDS[key]]
            if not ok(v):
                raise SpaceError(f"{where}: {v!r} is not {expected}")


def load_space(src: str | Path) -> Space:
    """Read and check a space file; errors name the file and the key."""
    path = Path(src)
    if not path.exists():
        # a shipped space by name: small, small.yaml, or the checkout's spaces/small.yaml from any folder
        name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
        shipped = resources.files("spaces") / name
        if path.parent in (Path("."), Path("spaces")) and shipped.is_file():
            text = shipped.read_text()
            return Space(validate_space(_parse(text, f"spaces/{name}"), f"spaces/{name}"), Path(name).stem, text)
        raise SpaceError(f"{src}: no such space file (shipped spaces: {', '.join(shipped_spaces())})")
    text = path.read_text()
    return Space(validate_space(_parse(text, str(path)), str(path)), path.stem, text)


def _parse(text: str, label: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpaceError(f"{label}: not valid YAML: {e}".replace("\n", " ")) from None


def shipped_spaces() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("spaces").iterdir() if p.name.endswith(".yaml"))


def validate_space(spec: Any, label: str = "space") -> dict:
    if not isinstance(spec, dict):
        raise SpaceError(f"{label}: expected a mapping of keys {', '.join(_SCHEMA)}")
    for key, value in spec.items():
        if key not in _SCHEMA:
            raise SpaceError(f"{label}: {key}: unknown key; valid: {', '.join(_SCHEMA)}")
        sub = _SCHEMA[key]
        if sub is None:
            _check_dist(value, f"{label}: {key}", key)
            continue
        if not isinstance(value, dict):
            raise SpaceError(f"{label}: {key}: expected a mapping of {', '.join(sub)}")
        for k, v in value.items():
            if k not in sub:
                raise SpaceError(f"{label}: {key}.{k}: unknown key; valid: {', '.join(sub)}")
            _check_dist(v, f"{label}: {key}.{k}", f"{key}.{k}")
    for key in ("width", "layers"):
        if key not in spec:
            raise SpaceError(f"{label}: {key}: missing")
    types = spec.get("branch", {}).get("type", ["conv_block"])
    for t in types if isinstance(types, list) else [types]:
        if t not in BLOCKS or t == "feed_forward":
            raise SpaceError(f"{label}: branch.type: {t!r} is not a branch block; valid: {', '.join(b for b in BLOCKS if b != 'feed_forward')}")
    widths = spec["width"] if isinstance(spec["width"], list) else [spec["width"]]
    if not all(isinstance(w, int) and w > 0 for w in widths):
        raise SpaceError(f"{label}: width: expected positive integers, got {widths}")
    return spec


def _suggest(trial, name: str, dist):
    if isinstance(dist, list):
        return trial.suggest_categorical(name, dist)
    if isinstance(dist, dict):
        if isinstance(dist["low"], int) and isinstance(dist["high"], int) and not dist.get("log"):
            return trial.suggest_int(name, dist["low"], dist["high"])
        return trial.suggest_float(name, float(dist["low"]), float(dist["high"]), log=bool(dist.get("log")))
    return dist  # fixed


def _divisor_at_most(width: int, heads: int) -> int:
    return max(h for h in range(1, heads + 1) if width % h == 0)


def sample_config(trial, space: Space, max_total_stride: int = 4) -> RunConfig:
    """Sample one run config (define-by-run; stable parameter names). Always validates and is feasible."""
    s = space.spec
    layer_s, branch_s = s.get("layer", {}), s.get("branch", {})
    cap = min(max_total_stride, s.get("max_total_stride", max_total_stride))
    width = _suggest(trial, "width", s["width"])
    n_layers = _suggest(trial, "layers", s["layers"])
    layers, total = [], 1
    for i in range(n_layers):
        stride = _suggest(trial, f"layer{i}.stride", layer_s.get("stride", 1))
        if total * stride > cap:
            stride = 1  # the sampled value stays in the trial; the built config records what was used
        total *= stride
        n_br = _suggest(trial, f"layer{i}.branches", layer_s.get("branches", 1))
        branches = []
        for j in range(n_br):
            p = f"layer{i}.branch{j}"
            btype = _suggest(trial, f"{p}.type", branch_s.get("type", "conv_block"))
            if stride > 1 and btype not in _STRIDABLE:
                btype = "conv_attention_conv_block"
            kernel = _suggest(trial, f"{p}.kernel", branch_s.get("kernel", 3))
            dil = _suggest(trial, f"{p}.dilation", branch_s.get("dilation", 1)) if btype != "attention_conv_block" else 1
            if dil * (kernel - 1) % 2:
                kernel += 1  # an even kernel at odd dilation cannot keep "same" length
            drop = float(_suggest(trial, f"{p}.dropout", branch_s.get("dropout", 0.0)))
            glu = bool(_suggest(trial, f"{p}.glu", branch_s.get("glu", False))) if btype != "attention_conv_block" else False
            k = 2 if glu else 1
            out = width * k if btype != "separable_conv_block" else width  # GLU halves it back to the width
            if btype in ("attention_conv_block", "conv_attention_conv_block"):
                heads = _divisor_at_most(width, int(_suggest(trial, f"{p}.heads", branch_s.get("heads", 4))))
            if btype == "conv_block":
                kw = dict(out_chan=out, kernel=kernel, stride=stride, dil=dil, dropout=drop, k=k)
            elif btype == "separable_conv_block":
                kw = dict(out_chan=out, kernel=kernel, stride=stride, dil=dil, dropout=drop, k=k)
            elif btype == "conv_attention_conv_block":
                kw = dict(out_chan=out, kernel_conv=kernel, stride_conv=stride, dil_conv=dil, dropout_conv=drop, k=k,
                          n_heads=heads, kernel_attn=kernel if kernel % 2 else kernel + 1, dropout_attn=drop)  # fmt: skip
            else:
                kw = dict(n_heads=heads, kernel=kernel if kernel % 2 else kernel + 1, dropout=drop)
            branches.append([btype, kw])
        branches[0][1][BLOCKS[branches[0][0]].in_key] = width
        d_ff = int(_suggest(trial, f"layer{i}.d_ff", layer_s.get("d_ff", 2)) * width * n_br)
        ff_drop = branches[0][1].get("dropout", branches[0][1].get("dropout_conv", 0.0))
        layers.append([branches, [["feed_forward", {"output_size": width, "d_ff": d_ff, "dropout": ff_drop}]]])
    train = {}
    for key, dist in s.get("train", {}).items():
        train[key] = _suggest(trial, f"train.{key}", dist) if isinstance(dist, (list, dict)) else dist
    return RunConfig(layers=load_layer_config(layers), frontend=s.get("frontend", "fbank"), train=TrainConfig(**train))


def max_feasible_stride(frames: list[int], targets: list[list[int]], tolerance: float = 0.02, cap: int = 16) -> int:
    """Largest power-of-two total stride at which CTC can align all but ``tolerance`` of the utterances.

    0 when not even stride 1 can (features too coarse for the transcripts): no config is feasible.
    """
    from stt.train import ctc_min_frames

    need = ctc_min_frames(targets)
    best = 0
    s = 1
    while s <= cap:
        bad = sum(1 for f, n in zip(frames, need) if -(-f // s) < n)
        if bad > tolerance * len(frames):
            break
        best, s = s, s * 2
    return best
