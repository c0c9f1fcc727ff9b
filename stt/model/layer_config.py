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
import dataclasses
import functools
import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from stt.core.errors import ConfigError, show, show_key
from stt.core.files import MAX_YAML_BYTES, parse_user_yaml, read_user_text
from stt.model.blocks import BLOCKS, BlockConfig, BlockConfigError, same_pad


class LayerConfigError(ConfigError):
    """A layer config that cannot build; the message names the path and the problem."""


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

    ``layers[i][j][b] == (block_type, kwargs)`` with every keyword filled in; ``configs[i][j][b]`` is the
    same branch as its block's config dataclass.
    """

    def __init__(self, branches: list[list[list[tuple[str, BlockConfig]]]], in_width: int):
        self.layers = [[[(t, cfg.kwargs()) for t, cfg in blk] for blk in layer] for layer in branches]
        self.configs = [[[cfg for _, cfg in blk] for blk in layer] for layer in branches]
        self.in_width = in_width

    # -- derived properties -------------------------------------------------
    @property
    def out_width(self) -> int:
        return block_width(self.configs[-1][-1])

    def layer_stride(self, i: int) -> int:
        return math.prod(blk[0].stride for blk in self.configs[i])

    @property
    def total_stride(self) -> int:
        return math.prod(self.layer_stride(i) for i in range(len(self.layers)))

    def layer_in_out(self, i: int) -> tuple[int, int]:
        first = self.configs[i][0][0]
        return getattr(first, first.in_key), block_width(self.configs[i][-1])

    def output_lengths(self, lengths):
        """Frame counts after every stride: works on ints and LongTensors alike."""
        for layer in self.configs:
            for blk in layer:  # parallel branches share their length (validated): the first one says it
                for g in blk[0].convs():
                    lengths = (lengths + 2 * g.pad - g.dil * (g.kernel - 1) - 1) // g.stride + 1
        return lengths

    @property
    def receptive_field(self) -> int:
        """Input frames that one output frame can see (the widest branch of each block)."""
        rf, jump = 1, 1
        for layer in self.configs:
            for blk in layer:
                best_rf, best_jump = rf, jump
                for cfg in blk:
                    r, jmp = rf, jump
                    for g in cfg.convs():
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
        widths = f"{self.in_width}->{self.out_width}"
        return f"LayerConfig({len(self.layers)} layers, {n} branches, width {widths}, stride {self.total_stride})"


def block_width(block: list[BlockConfig]) -> int:
    """Channels out of one block: the sum over its parallel branches."""
    return sum(cfg.out_width() for cfg in block)


def dump_layers_yaml(layers: list) -> str:
    """YAML with one line per branch: ``- [block_type, {kwargs}]``, nested by layer and block."""
    lines = []
    for i, layer in enumerate(layers):
        lines.append(f"# layer {i}")
        for j, blk in enumerate(layer):
            for b, branch in enumerate(blk):
                lead = ("- " if j == 0 and b == 0 else "  ") + ("- " if b == 0 else "  ") + "- "
                flow = yaml.safe_dump(
                    [branch[0], dict(branch[1])], default_flow_style=True, width=10**6, sort_keys=False
                )
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
        try:
            exists = path.exists()
        except OSError as e:  # a name too long for the file system
            raise LayerConfigError(f"{show(str(path))}: cannot be read ({e.strerror})") from None
        if not exists:
            shipped = resources.files("stt") / "configs" / path.name
            if path.parent == Path(".") and shipped.is_file():
                return yaml.safe_load(shipped.read_text()), path.name
            raise LayerConfigError(f"{path}: no such file (shipped configs: {', '.join(shipped_configs())})")
        text = read_user_text(path, LayerConfigError, limit=MAX_YAML_BYTES)
        return parse_user_yaml(text, str(path), LayerConfigError), str(path)
    if isinstance(src, str):
        return parse_user_yaml(src, "config", LayerConfigError), "config"
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
            raise LayerConfigError(
                f"{label}: a mapping needs a 'layers' or 'model.layers' key, found {show(list(obj))}"
            )
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
                raise LayerConfigError(
                    f"{_path(i, j)}: expected a non-empty list of parallel branches, got {_show(blk)}"
                )
            new_blk = []
            for b, branch in enumerate(blk):
                btype, kw = _split_branch(branch, _path(i, j, b))
                cfg = _normalise_branch(btype, kw, width, _path(i, j, b))
                if width is None:  # the first branch said the model's input width
                    width = first_width = getattr(cfg, cfg.in_key)
                new_blk.append((btype, cfg))
            strides = [cfg.stride for _, cfg in new_blk]
            for b, s in enumerate(strides):
                if s != strides[0]:
                    raise LayerConfigError(
                        f"{_path(i, j, b)}: stride {s} differs from branch 0's stride {strides[0]}; "
                        "parallel branches must give the same number of frames"
                    )
            new_layer.append(new_blk)
            width = block_width([cfg for _, cfg in new_blk])
        out.append(new_layer)
    return LayerConfig(out, first_width)


_show = show  # a value in a message: its repr, cut to 60 characters, walking no more of it than that


def _split_branch(branch, path: str) -> tuple[str, dict]:
    if isinstance(branch, dict) and len(branch) == 1:  # {block_type: {kwargs}} is accepted too
        branch = next(iter(branch.items()))
    if not isinstance(branch, (list, tuple)) or len(branch) != 2 or not isinstance(branch[0], str):
        raise LayerConfigError(f"{path}: expected [block_type, {{kwargs}}], got {_show(branch)}")
    btype, kw = branch
    if btype not in BLOCKS:
        raise LayerConfigError(f"{path}: unknown block type '{show_key(btype)}'; valid: {', '.join(BLOCKS)}")
    if kw is None:
        kw = {}
    if not isinstance(kw, dict):
        raise LayerConfigError(f"{path}: kwargs of {btype} must be a mapping, got {_show(kw)}")
    return btype, dict(kw)


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}
_KIND_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _kinds(annotation) -> list[str]:
    """A dataclass field's type as kind names: ``"bool | str"`` (or the type ``int | None``) -> ["bool", "str"]."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return [k.strip() for k in text.split("|")]


def type_mismatch(value, annotation) -> str | None:
    """What ``value`` should have been when it does not fit a dataclass field's type; None when it fits.

    YAML and flags give strings, numbers and booleans; each key takes exactly its own kind (``true`` is not
    an integer). ``annotation``: the field's type as written (``"int"``, ``"bool | str"``, ``"int | None"``).
    """
    kinds = _kinds(annotation)
    if isinstance(value, float) and not math.isfinite(value) and "float" in kinds:
        return "a finite number"  # nan passes every range check (nan < 0 is false), inf most
    if type(value) is int and not -(2**63) <= value < 2**63 and "int" in kinds:
        return "a 64-bit integer"  # what torch and numpy take (sizes, seeds, counts)
    allowed = tuple(t for k in kinds for t in _TYPES[k])
    if isinstance(value, bool) and "bool" not in kinds or not isinstance(value, allowed):
        return " or ".join(_KIND_NAMES[k] for k in kinds if k != "None")
    return None


@functools.cache
def _fields(cfg_cls: type) -> tuple[dict, dict]:
    """A block config's fields by name, and their kinds by name (once per class)."""
    specs = {f.name: f for f in dataclasses.fields(cfg_cls)}
    return specs, {name: _kinds(f.type) for name, f in specs.items()}


def _normalise_branch(btype: str, kw: dict, width: int | None, path: str) -> BlockConfig:
    """Check one branch's kwargs against its block's config dataclass; the config fills in what follows."""
    cfg_cls = BLOCKS[btype].Config
    specs, kinds = _fields(cfg_cls)
    unknown = [k for k in kw if k not in specs]
    if unknown:
        raise LayerConfigError(f"{path}.{show_key(unknown[0])}: unknown key for {btype}; valid: {', '.join(specs)}")
    for key, value in kw.items():
        expected = type_mismatch(value, specs[key].type)
        if expected:
            raise LayerConfigError(f"{path}.{key}: expected {expected}, got {_show(value)}")

    in_key = cfg_cls.in_key
    given = kw.get(in_key)
    if width is None:
        if given is None:
            raise LayerConfigError(f"{path}.{in_key}: needed on the first branch (the model's input width)")
    elif given is not None and given != width:
        raise LayerConfigError(f"{path}.{in_key}: {show(given)}, but the input to this block has {width} channels")
    full = {k: kw.get(k, f.default) for k, f in specs.items()}
    full[in_key] = given if given is not None else width

    for key, f in specs.items():
        meta, value = f.metadata, full[key]
        if value is None:
            if meta["required"]:
                raise LayerConfigError(f"{path}.{key}: missing (required for {btype})")
            continue
        if meta["choices"] is not None and value not in meta["choices"]:
            choices = ", ".join(map(str, meta["choices"]))
            raise LayerConfigError(f"{path}.{key}: must be one of {choices} ({meta['doc']}), got {show(value)}")
        low = meta["low"] if meta["low"] is not None else (1 if kinds[key] == ["int"] else None)
        if low is not None and value < low or meta["below"] is not None and value >= meta["below"]:
            if meta["below"] is not None:
                raise LayerConfigError(f"{path}.{key}: must be in [{low}, {meta['below']}), got {show(value)}")
            what = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise LayerConfigError(f"{path}.{key}: must be {what}, got {show(value)}")

    for pad_key, f in specs.items():
        if not f.metadata["same_pad"]:
            continue
        kernel_key, dil_key = f.metadata["same_pad"]
        kernel, dil = full[kernel_key], full[dil_key] if dil_key else 1
        if dil * (kernel - 1) % 2:
            what = f"kernel {kernel} with dilation {dil}" if dil_key else f"even kernel {kernel}"
            raise LayerConfigError(
                f"{path}.{kernel_key}: {what} cannot keep 'same' length (dilation*(kernel-1) must be even)"
            )
        want = same_pad(kernel, dil)
        if full[pad_key] is not None and full[pad_key] != want:
            raise LayerConfigError(
                f"{path}.{pad_key}: {full[pad_key]} changes the length; 'same' padding for kernel {kernel}, "
                f"dilation {dil} is {want} (or leave it out)"
            )
    cfg = cfg_cls(**full)  # derives the paddings left out
    try:
        cfg.check()
    except BlockConfigError as e:
        raise LayerConfigError(f"{path}.{e.key}: {e}") from None
    return cfg
