"""The nested layer config: load, normalise, validate, save.

A config is a list of *layers*; a layer is a list of sequential *blocks*; a
block is a list of parallel *branches*, each ``[block_type, {kwargs}]``, whose
outputs are concatenated on channels (the design note's format). Example::

    - - - [conv_block, {in_chan: 80, out_chan: 128, kernel: 5}]
        - [conv_block, {out_chan: 128, kernel: 5, dil: 2}]
      - - [feed_forward, {output_size: 128, d_ff: 256}]

All validation lives here, at the edge: once ``normalise`` has returned, the
model builds and every shape and length lines up. ``normalise`` derives what
follows from the rest (each branch's input width from the previous block's
output, ``pad`` for "same" length, FeedForward ``input_size`` as the sum of the
parallel widths) and rejects what cannot work with a message naming the path,
e.g. ``layers[2].blocks[0].branches[1].n_heads: 6 does not divide 512``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from stt.blocks import BLOCKS, block_stride, same_pad
from stt.errors import ConfigError


class LayerConfigError(ConfigError):
    """A layer config that cannot build; the message names the path and the problem."""


_INT_KEYS = {"in_chan", "out_chan", "kernel", "stride", "pad", "dil", "groups", "k", "n_heads", "input_size",
             "output_size", "d_ff", "kernel_conv", "stride_conv", "pad_conv", "dil_conv", "kernel_attn", "pad_attn"}  # fmt: skip
_FLOAT_KEYS = {"dropout", "dropout_conv", "dropout_attn"}
_BOOL_KEYS = {"bias"}
# (pad key, kernel key, dilation key or None) for every padding the loader derives.
_PADS = [("pad", "kernel", "dil"), ("pad_conv", "kernel_conv", "dil_conv"), ("pad_attn", "kernel_attn", "-")]


def _path(i: int, j: int | None = None, b: int | None = None, key: str | None = None) -> str:
    p = f"layers[{i}]"
    if j is not None:
        p += f".blocks[{j}]"
    if b is not None:
        p += f".branches[{b}]"
    if key is not None:
        p += f".{key}"
    return p


class LayerConfig:
    """A normalised, validated nested layer config.

    ``layers[i][j][b] == (block_type, kwargs)`` with every keyword filled in.
    """

    def __init__(self, layers: list, in_width: int):
        self.layers = layers
        self.in_width = in_width

    # -- derived properties -------------------------------------------------
    @property
    def out_width(self) -> int:
        return block_width(self.layers[-1][-1])

    @property
    def width(self) -> int:
        """The model width: the first layer's input channels."""
        return self.in_width

    def layer_stride(self, i: int) -> int:
        return math.prod(block_stride(*blk[0]) for blk in self.layers[i])

    @property
    def total_stride(self) -> int:
        return math.prod(self.layer_stride(i) for i in range(len(self.layers)))

    def layer_in_out(self, i: int) -> tuple[int, int]:
        first = self.layers[i][0][0]
        return first[1][BLOCKS[first[0]].in_key], block_width(self.layers[i][-1])

    def output_lengths(self, lengths):
        """Frame counts after every stride: works on ints and LongTensors alike."""
        for layer in self.layers:
            for blk in layer:
                btype, kw = blk[0]  # parallel branches share their length (validated)
                for g in BLOCKS[btype].convs(kw):
                    lengths = (lengths + 2 * g.pad - g.dil * (g.kernel - 1) - 1) // g.stride + 1
        return lengths

    @property
    def receptive_field(self) -> int:
        """Input frames that one output frame can see (the widest branch of each block)."""
        rf, jump = 1, 1
        for layer in self.layers:
            for blk in layer:
                best_rf, best_jump = rf, jump
                for btype, kw in blk:
                    r, jmp = rf, jump
                    for g in BLOCKS[btype].convs(kw):
                        r += (g.kernel - 1) * g.dil * jmp
                        jmp *= g.stride
                    best_rf, best_jump = max(best_rf, r), jmp
                rf, jump = best_rf, best_jump
        return rf

    # -- serialisation -------------------------------------------------------
    def to_list(self) -> list:
        """Plain nested lists and dicts (YAML/JSON-ready)."""
        return [[[[t, dict(kw)] for t, kw in blk] for blk in layer] for layer in self.layers]

    def to_yaml(self) -> str:
        return dump_layers_yaml(self.to_list())

    def hash(self) -> str:
        """Stable identity of the architecture (normalised, key-order independent)."""
        return hashlib.sha256(json.dumps(self.to_list(), sort_keys=True).encode()).hexdigest()[:16]

    def __eq__(self, other):
        return isinstance(other, LayerConfig) and self.to_list() == other.to_list()

    def __repr__(self):
        n = sum(len(blk) for layer in self.layers for blk in layer)
        return f"LayerConfig({len(self.layers)} layers, {n} branches, width {self.in_width}->{self.out_width}, stride {self.total_stride})"


def block_width(block: list) -> int:
    """Channels out of one block: the sum over its parallel branches."""
    return sum(BLOCKS[t].out_width(kw) for t, kw in block)


def dump_layers_yaml(layers: list) -> str:
    """YAML with one line per branch: ``- [block_type, {kwargs}]``, nested by layer and block."""
    lines = []
    for i, layer in enumerate(layers):
        lines.append(f"# layer {i}")
        for j, blk in enumerate(layer):
            for b, branch in enumerate(blk):
                lead = ("- " if j == 0 and b == 0 else "  ") + ("- " if b == 0 else "  ") + "- "
                flow = yaml.safe_dump([branch[0], dict(branch[1])], default_flow_style=True, width=10**6, sort_keys=False)
                lines.append(lead + flow.strip())
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# loading


def read_source(src) -> tuple[Any, str]:
    """Return (parsed object, label for messages)."""
    if isinstance(src, LayerConfig):
        return src.to_list(), "config"
    if isinstance(src, (list, tuple, dict)):
        return copy.deepcopy(src), "config"
    if isinstance(src, Path) or (isinstance(src, str) and "\n" not in src and src.strip().endswith((".yaml", ".yml"))):
        path = Path(src)
        if not path.exists():
            shipped = resources.files("stt") / "configs" / path.name
            if path.parent == Path(".") and shipped.is_file():
                return yaml.safe_load(shipped.read_text()), path.name
            raise LayerConfigError(f"{path}: no such file (shipped configs: {', '.join(shipped_configs())})")
        try:
            return yaml.safe_load(path.read_text()), str(path)
        except yaml.YAMLError as e:
            raise LayerConfigError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    if isinstance(src, str):
        try:
            return yaml.safe_load(src), "config"
        except yaml.YAMLError as e:
            raise LayerConfigError(f"config: not valid YAML: {e}".replace("\n", " ")) from None
    raise LayerConfigError(f"config: expected a path, a YAML string or a nested list, got {type(src).__name__}")


def shipped_configs() -> list[str]:
    return sorted(p.name for p in (resources.files("stt") / "configs").iterdir() if p.name.endswith(".yaml"))


def load_layer_config(src, in_width: int | None = None) -> LayerConfig:
    """Load and validate a nested layer config.

    Args:
        src: a path (a bare name such as ``"seed_base.yaml"`` falls back to the
            configs shipped in ``stt/configs``), a YAML string, a nested Python
            list, a LayerConfig, or a run config (a mapping with ``model.layers``
            or ``layers``).
        in_width: channels entering the first layer; needed only when the
            first branch does not say it.
    Raises:
        LayerConfigError: naming the file (if any), the path and the problem.
    """
    obj, label = read_source(src)
    if isinstance(obj, dict):
        if isinstance(obj.get("model"), dict) and "layers" in obj["model"]:
            obj = obj["model"]["layers"]
        elif "layers" in obj:
            obj = obj["layers"]
        else:
            raise LayerConfigError(f"{label}: a mapping needs a 'layers' or 'model.layers' key, found {sorted(obj)}")
    try:
        return normalise(obj, in_width=in_width)
    except LayerConfigError as e:
        raise LayerConfigError(f"{label}: {e}" if label != "config" else str(e)) from None


def normalise(layers, in_width: int | None = None) -> LayerConfig:
    """Fill in derived keys and validate; see the module docstring."""
    if not isinstance(layers, (list, tuple)) or not layers:
        raise LayerConfigError(f"layers: expected a non-empty list of layers, got {_show(layers)}")
    out = []
    width = first_width = in_width
    for i, layer in enumerate(layers):
        if not isinstance(layer, (list, tuple)) or not layer:
            raise LayerConfigError(f"{_path(i)}: expected a non-empty list of blocks, got {_show(layer)}")
        new_layer = []
        for j, blk in enumerate(layer):
            if not isinstance(blk, (list, tuple)) or not blk:
                raise LayerConfigError(f"{_path(i, j)}: expected a non-empty list of parallel branches, got {_show(blk)}")
            new_blk = []
            for b, branch in enumerate(blk):
                btype, kw = _split_branch(branch, _path(i, j, b))
                kw = _normalise_branch(btype, kw, width, _path(i, j, b))
                if width is None:  # the first branch said the model's input width
                    width = first_width = kw[BLOCKS[btype].in_key]
                new_blk.append((btype, kw))
            strides = [block_stride(t, kw) for t, kw in new_blk]
            for b, s in enumerate(strides):
                if s != strides[0]:
                    raise LayerConfigError(
                        f"{_path(i, j, b)}: stride {s} differs from branch 0's stride {strides[0]}; "
                        "parallel branches must give the same number of frames"
                    )
            new_layer.append(new_blk)
            width = block_width(new_blk)
        out.append(new_layer)
    return LayerConfig(out, first_width)


def _show(x) -> str:
    s = repr(x)
    return s if len(s) < 60 else s[:57] + "..."


def _split_branch(branch, path: str) -> tuple[str, dict]:
    if isinstance(branch, dict) and len(branch) == 1:  # {block_type: {kwargs}} is accepted too
        branch = next(iter(branch.items()))
    if not isinstance(branch, (list, tuple)) or len(branch) != 2 or not isinstance(branch[0], str):
        raise LayerConfigError(f"{path}: expected [block_type, {{kwargs}}], got {_show(branch)}")
    btype, kw = branch
    if btype not in BLOCKS:
        raise LayerConfigError(f"{path}: unknown block type '{btype}'; valid: {', '.join(BLOCKS)}")
    if kw is None:
        kw = {}
    if not isinstance(kw, dict):
        raise LayerConfigError(f"{path}: kwargs of {btype} must be a mapping, got {_show(kw)}")
    return btype, dict(kw)


def _normalise_branch(btype: str, kw: dict, width: int | None, path: str) -> dict:
    cls = BLOCKS[btype]
    params = cls.PARAMS
    unknown = [k for k in kw if k not in params]
    if unknown:
        raise LayerConfigError(f"{path}.{unknown[0]}: unknown key for {btype}; valid: {', '.join(params)}")
    for key, value in kw.items():
        _check_type(key, value, f"{path}.{key}")

    in_key = cls.in_key
    given = kw.get(in_key)
    if width is None:
        if given is None:
            raise LayerConfigError(f"{path}.{in_key}: needed on the first branch (the model's input width)")
    elif given is not None and given != width:
        raise LayerConfigError(f"{path}.{in_key}: {given}, but the input to this block has {width} channels")
    full = {k: (kw[k] if k in kw else v) for k, v in params.items()}
    full[in_key] = given if given is not None else width

    for key, value in full.items():
        if value is None and not key.startswith("pad"):
            raise LayerConfigError(f"{path}.{key}: missing (required for {btype})")

    for key in _INT_KEYS & full.keys():
        if not key.startswith("pad") and full[key] < 1:
            raise LayerConfigError(f"{path}.{key}: must be a positive integer, got {full[key]}")
    for key in _FLOAT_KEYS & full.keys():
        if not 0.0 <= full[key] < 1.0:
            raise LayerConfigError(f"{path}.{key}: a dropout must be in [0, 1), got {full[key]}")

    if "k" in full:
        if full["k"] not in (1, 2):
            raise LayerConfigError(f"{path}.k: must be 1 (ReLU) or 2 (GLU), got {full['k']}")
        if full["k"] == 2 and btype != "separable_conv_block" and full["out_chan"] % 2:
            raise LayerConfigError(f"{path}.out_chan: {full['out_chan']} is odd, but GLU (k: 2) halves it")

    if "groups" in full:
        for key in ("in_chan", "out_chan"):
            if full[key] % full["groups"]:
                raise LayerConfigError(f"{path}.groups: {full['groups']} does not divide {key} {full[key]}")

    if "n_heads" in full:
        chans = full["in_chan"] if btype == "attention_conv_block" else full["out_chan"] // full["k"]
        if chans % full["n_heads"]:
            raise LayerConfigError(f"{path}.n_heads: {full['n_heads']} does not divide {chans}")

    for pad_key, kernel_key, dil_key in _PADS:
        if pad_key not in full:
            continue
        kernel, dil = full[kernel_key], full.get(dil_key, 1)
        if dil * (kernel - 1) % 2:
            what = f"kernel {kernel} with dilation {dil}" if dil_key in full else f"even kernel {kernel}"
            raise LayerConfigError(
                f"{path}.{kernel_key}: {what} cannot keep 'same' length (dilation*(kernel-1) must be even)"
            )
        want = same_pad(kernel, dil)
        if full[pad_key] is None:
            full[pad_key] = want
        elif full[pad_key] != want:
            raise LayerConfigError(
                f"{path}.{pad_key}: {full[pad_key]} changes the length; 'same' padding for kernel {kernel}, "
                f"dilation {dil} is {want} (or leave it out)"
            )
    return full


def _check_type(key: str, value, path: str) -> None:
    if key in _INT_KEYS:
        ok = value is None if key == "pad" or key.startswith("pad_") else False
        if ok or (isinstance(value, int) and not isinstance(value, bool)):
            return
        raise LayerConfigError(f"{path}: expected an integer, got {_show(value)}")
    if key in _FLOAT_KEYS:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        raise LayerConfigError(f"{path}: expected a number, got {_show(value)}")
    if key in _BOOL_KEYS and not isinstance(value, bool):
        raise LayerConfigError(f"{path}: expected true or false, got {_show(value)}")
