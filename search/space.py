"""Search spaces: a YAML file of choices -> define-by-run sampling of run configs.

A space file (``spaces/small.yaml``)::

    frontend: fbank
    seeds: [small]                      # configs to train first (shipped names or paths); points of this space
    width: [96, 128, 192]               # model width (channels)
    layers: {low: 3, high: 6}           # number of layers
    layer:
      stride: [1, 2]                    # per layer; a stride past the corpus's cap is not offered
      branches: {low: 1, high: 2}       # parallel branches per layer
      d_ff: [1, 2]                      # merge feed-forward width, as a multiple of the concatenated width
      single_ff: [false, true]          # whether a single branch gets the feed-forward too
    branch:
      type: [conv_block, separable_conv_block, attention_conv_block, conv_attention_conv_block]
      kernel: [3, 5, 7]                 # odd ("same" length at any dilation)
      dilation: [1, 2]
      glu: [false, true]
      heads: [2, 4, 8]                  # each must divide every width
      dropout: {low: 0.0, high: 0.2}
    train:
      lr: {low: 0.001, high: 0.008, log: true}
      batch_frames: [8000, 16000]
      epochs: 20                        # a scalar is fixed, not searched

A list is a categorical choice (each value once), ``{low, high}`` an int (both
ints) or float range (``log: true`` for log scale), a scalar is fixed. Parameter
names are stable paths: ``width``, ``layers``, ``layer2.stride``,
``layer2.branches``, ``layer2.branch1.type``, ``layer2.branch1.kernel``,
``train.lr``.

Every recorded parameter is a property of the built model, so
``sample_config(FixedTrial(trial.params))`` rebuilds the stored config and TPE
learns from what was trained. Choices that could not build are not offered
instead of being overridden after sampling: a layer whose stride would pass the
total-stride cap samples ``layerI.stride_uptoR`` from the strides that fit (or
nothing, when only 1 fits), and a strided layer samples ``strided_type`` from
the block types that can stride. Head counts that do not divide a width, even
kernels and repeated choices are errors when the space is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from search.template_space import (
    BLOCK_KINDS,
    TEMPLATE_CONFIG,
    build_template,
    check_template_space,
    load_template,
    template_actual,
    with_template_config,
)
from stt.core.errors import ConfigError, show, show_key
from stt.core.files import MAX_YAML_BYTES, parse_user_yaml, read_user_text
from stt.data.frontends import spec_problem
from stt.model.blocks import BLOCKS, block_config
from stt.model.layer_config import load_layer_config
from stt.train.run_config import RunConfig, TrainConfig


class SpaceError(ConfigError):
    """An invalid space file (the message names the file and key)."""


# the most branches one sampled model may have (largest ``layers`` times largest ``layer.branches``): sampling
# and checking a candidate take time in proportion (the shipped spaces reach 24)
MAX_BRANCHES = 1024


# the per-branch choices a block's config may read (BlockConfig.knobs), with the value a space that leaves one
# out gets; attn_kernel: None = the conv kernel, and not a parameter unless the space lists it
_KNOBS = {
    "kernel": 3,
    "dilation": 1,
    "dropout": 0.0,
    "glu": False,
    "heads": 4,
    "attn_kernel": None,
    "repeat": 1,  # jasper_block's sub-modules
    "separable": False,  # jasper_block's time-channel separable convs
    "se": False,  # jasper_block's squeeze-and-excitation
}
_KNOB_TYPES = {
    "kernel": int,
    "dilation": int,
    "dropout": float,
    "glu": bool,
    "heads": int,
    "attn_kernel": int,
    "repeat": int,
    "separable": bool,
    "se": bool,
}


_SCHEMA = {
    "frontend": None,
    "width": None,
    "layers": None,
    "max_total_stride": None,
    "seeds": None,
    "layer": {"stride": None, "branches": None, "d_ff": None, "single_ff": None},
    "branch": {"type": None, **dict.fromkeys(_KNOBS)},
    "train": {k: None for k in TrainConfig.__dataclass_fields__},
}
_LOADED = "loaded"  # a key search.template_space.load_template reads and checks, not a distribution
_TEMPLATE_SCHEMA = {
    "template": _LOADED,
    "seeds": None,
    "frontend": None,
    "width_multiplier": None,
    "block": dict.fromkeys(BLOCK_KINDS),
    "train": _SCHEMA["train"],
    TEMPLATE_CONFIG: _LOADED,
}


def _branch_types() -> list[str]:
    return [t for t, cls in BLOCKS.items() if cls.Config.searchable]


def _stridable() -> list[str]:
    return [t for t in _branch_types() if BLOCKS[t].Config.can_stride]


@dataclass
class Space:
    spec: dict
    name: str
    text: str  # the YAML as read: stored with the study so resume samples the same space

    @property
    def template(self) -> RunConfig | None:
        """The model a template space searches around (``search.template_space``); None for a layered space."""
        if "template" not in self.spec:
            return None
        if "_template" not in self.__dict__:
            self.__dict__["_template"] = load_template(self.spec, self.name)
        return self.__dict__["_template"]


# what each searched key's values must be (train.* keys take their TrainConfig field's type)
_KINDS = {
    "width": "count",
    "layers": "count",
    "max_total_stride": "count",
    "frontend": "text",
    "layer.stride": "count",
    "layer.branches": "count",
    "layer.d_ff": "positive",
    "layer.single_ff": "flag",
    "branch.type": "text",
    "branch.kernel": "count",
    "branch.attn_kernel": "count",
    "branch.dilation": "count",
    "branch.heads": "count",
    "branch.glu": "flag",
    "branch.dropout": "fraction",
    "branch.repeat": "count",
    "branch.separable": "flag",
    "branch.se": "flag",
    "width_multiplier": "positive",
    **{f"block.{k}": kind for k, kind in BLOCK_KINDS.items()},
}


def _number(v) -> bool:
    """An int or a finite float (nan passes no range check, so it would pass every one)."""
    return isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and math.isfinite(v)


# Optuna handles a parameter's values as 64-bit floats (a range's ends and their difference, a categorical's
# choices when it compares them): a number past this is refused when the space is read
_NUMBER_LIMIT = 1e300


_KIND_CHECKS = {
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "positive": (lambda v: _number(v) and v > 0, "a finite number > 0"),
    "fraction": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
        "a number in [0, 1)",
    ),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "text": (lambda v: isinstance(v, str), "a string"),
}


def _as_list(value) -> list:
    """A space value's choices: a list as is, a scalar as its only choice."""
    return value if isinstance(value, list) else [value]


def _check_dist(value, where: str, key: str) -> None:
    if isinstance(value, list):
        if not value:
            raise SpaceError(f"{where}: an empty list of choices")
        candidates = value
    elif isinstance(value, dict):
        extra = set(value) - {"low", "high", "log"}
        if extra or "low" not in value or "high" not in value:
            raise SpaceError(
                f"{where}: a range needs exactly low, high (and optional log); got {show(list(value), 200)}"
            )
        candidates = [value["low"], value["high"]]
        if not all(_number(v) for v in candidates):
            raise SpaceError(f"{where}: a range's low and high must be finite numbers, got {show(candidates)}")
        if value["low"] > value["high"]:
            raise SpaceError(f"{where}: low {show(value['low'])} > high {show(value['high'])}")
        if not isinstance(value.get("log", False), bool):
            raise SpaceError(f"{where}.log: {show(value['log'])} is not true or false")
        if value.get("log") and value["low"] <= 0:
            raise SpaceError(f"{where}: a log range needs low > 0, got {show(value['low'])}")
        if value.get("log") and all(isinstance(v, int) for v in candidates) and _takes_ints(key):
            # _suggest samples a log range as floats: an integer setting would get 2.7 layers
            raise SpaceError(f"{where}: a log range samples floats, but {key} takes integers; drop log: true")
    elif isinstance(value, (int, float, str, bool)) or value is None:
        candidates = [value]
    else:
        raise SpaceError(f"{where}: expected a list, a {{low, high}} range or a scalar, got {type(value).__name__}")
    for v in candidates:
        if key.startswith("train."):
            try:  # each value must make a valid TrainConfig: checked here, not in every trial that samples it
                TrainConfig(**{key[len("train.") :]: v})
            except ConfigError as e:
                raise SpaceError(f"{where}: {str(e).split(': ', 1)[1]}") from None
        elif key in _KINDS:
            ok, expected = _KIND_CHECKS[_KINDS[key]]
            if not ok(v):
                raise SpaceError(f"{where}: {show(v)} is not {expected}")
            if _KINDS[key] == "count" and v >= 2**63:  # as a config's integers (layer_config.type_mismatch)
                raise SpaceError(f"{where}: {show(v)} is not a 64-bit integer")
    for v in candidates:
        if _number(v) and not -_NUMBER_LIMIT <= v <= _NUMBER_LIMIT:
            raise SpaceError(
                f"{where}: {show(v)} is outside [-{_NUMBER_LIMIT:g}, {_NUMBER_LIMIT:g}]; Optuna samples a space's "
                "numbers as 64-bit floats"
            )
    if isinstance(value, list):  # every choice is a checked scalar now, so hashable
        seen = set()
        for v in value:
            if (type(v), v) in seen:
                # Optuna stores a categorical by its index into the choices: repeats would collapse into one
                raise SpaceError(f"{where}: {show(value)} repeats {show(v)}; list each choice once")
            seen.add((type(v), v))


def _takes_ints(key: str) -> bool:
    if key.startswith("train."):
        return TrainConfig.__dataclass_fields__[key[len("train.") :]].type == "int"
    return _KINDS.get(key) == "count"


def _largest(dist):
    """The largest value a checked numeric distribution can give."""
    return dist["high"] if isinstance(dist, dict) else max(_as_list(dist))


def _smallest(dist):
    """The smallest value a checked numeric distribution can give."""
    return dist["low"] if isinstance(dist, dict) else min(_as_list(dist))


def load_space(src: str | Path) -> Space:
    """Read and check a space file; errors name the file and the key."""
    path = Path(src)
    try:
        exists = path.exists()
    except OSError as e:  # a name too long for the file system
        raise SpaceError(f"{show(str(path))}: cannot be read ({e.strerror})") from None
    if not exists:
        # a shipped space by name: small, small.yaml, or the checkout's spaces/small.yaml from any folder
        name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
        shipped = resources.files("spaces") / name
        if path.parent in (Path("."), Path("spaces")) and shipped.is_file():
            text = shipped.read_text()
            return _read(Space(validate_space(_parse(text, f"spaces/{name}"), f"spaces/{name}"), Path(name).stem, text))
        raise SpaceError(f"{src}: no such space file (shipped spaces: {', '.join(shipped_spaces())})")
    text = read_user_text(path, SpaceError, limit=MAX_YAML_BYTES)
    return _read(Space(validate_space(_parse(text, str(path)), str(path)), path.stem, text))


def _read(space: Space) -> Space:
    """A space read from its file; a template space's text gets its template's config (what a study stores)."""
    if space.template is not None:
        space.text = with_template_config(space.text, space.spec, space.template)
    return space


def space_from_text(text: str, name: str) -> Space:
    """A space stored as text (a study keeps its space's text, so resume samples the same space)."""
    return Space(validate_space(_parse(text, name), name), name, text)


def _parse(text: str, label: str):
    return parse_user_yaml(text, label, SpaceError)


def shipped_spaces() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("spaces").iterdir() if p.name.endswith(".yaml"))


def validate_space(spec: Any, label: str = "space") -> dict:
    if isinstance(spec, dict) and "template" in spec:
        _check_keys(spec, label, _TEMPLATE_SCHEMA, required=(), what=" in a template space")
        try:
            check_template_space(spec, label)
        except SpaceError:
            raise
        except ConfigError as e:  # the template's own file, named in the message
            raise SpaceError(str(e)) from None
        return spec
    _check_keys(spec, label)
    _check_block_types(spec, label)
    widths = _as_list(spec["width"])
    if not all(isinstance(w, int) and w > 0 for w in widths):
        raise SpaceError(f"{label}: width: expected positive integers, got {show(widths)}")
    # what would otherwise need a sampled value overridden after the fact: ruled out here, at the edge
    _check_unsearched(spec, label)
    _check_sizes(spec, label, widths)
    _check_shapes(spec, label, widths)
    return spec


def _check_keys(
    spec: Any, label: str, schema: dict = _SCHEMA, required: tuple = ("width", "layers"), what: str = ""
) -> None:
    """Known sections and keys of ``schema``, each a distribution (or seeds, a list of configs); ``required`` given.
    ``what`` follows "unknown key" in the message (which kind of space)."""
    if not isinstance(spec, dict):
        raise SpaceError(f"{label}: expected a mapping of keys {', '.join(schema)}")
    for key, value in spec.items():
        if key not in schema:
            raise SpaceError(f"{label}: {show_key(key)}: unknown key{what}; valid: {', '.join(schema)}")
        sub = schema[key]
        if sub == _LOADED:
            continue
        if key == "seeds":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SpaceError(
                    f"{label}: seeds: expected a list of config paths or shipped config names, got {show(value)}"
                )
            continue
        if sub is None:
            _check_dist(value, f"{label}: {key}", key)
            continue
        if not isinstance(value, dict):
            raise SpaceError(f"{label}: {key}: expected a mapping of {', '.join(sub)}")
        for k, v in value.items():
            if k not in sub:
                raise SpaceError(f"{label}: {key}.{show_key(k)}: unknown key; valid: {', '.join(sub)}")
            _check_dist(v, f"{label}: {key}.{k}", f"{key}.{k}")
    for key in required:
        if key not in spec:
            raise SpaceError(f"{label}: {key}: missing")


def _check_block_types(spec: dict, label: str) -> None:
    """Every branch.type is a searchable block whose knobs a space has."""
    types = spec.get("branch", {}).get("type", ["conv_block"])
    for t in _as_list(types):
        if t not in _branch_types():
            raise SpaceError(
                f"{label}: branch.type: {show(t)} is not a branch block; valid: {', '.join(_branch_types())}"
            )
        odd = [k for k in BLOCKS[t].Config.knobs if k not in _KNOBS]
        if odd:  # a block author's mistake, named here rather than as a KeyError mid-study
            raise SpaceError(
                f"{label}: branch.type: {t} reads knob {odd[0]!r}, which spaces do not have; valid: {', '.join(_KNOBS)}"
            )


def _check_unsearched(spec: dict, label: str) -> None:
    """Keys a range cannot give (strides, kernels, heads, buckets) and values one study cannot vary (the frontend,
    the stride cap)."""
    for section, key in (
        ("layer", "stride"),
        ("branch", "kernel"),
        ("branch", "attn_kernel"),
        ("branch", "heads"),
        ("train", "buckets_per_octave"),
    ):  # a range would give values that are not allowed
        if isinstance(spec.get(section, {}).get(key), dict):
            raise SpaceError(f"{label}: {section}.{key}: expected a list of choices, not a range")
    for key in ("frontend", "max_total_stride"):  # one corpus, one cap: not searched
        if isinstance(spec.get(key), (list, dict)):
            raise SpaceError(f"{label}: {key}: expected a single value, not {show(spec[key])}")
    frontend = spec.get("frontend", "fbank")
    problem = spec_problem(frontend)
    if problem:
        raise SpaceError(f"{label}: frontend: {show(frontend)}: {problem}")


def _check_sizes(spec: dict, label: str, widths: list) -> None:
    """A sampled model stays buildable: at most MAX_BRANCHES branches, a merge feed-forward of 1 to 2**63 - 1
    channels (d_ff times the concatenated width, rounded)."""
    most = _largest(spec["layers"]) * _largest(spec.get("layer", {}).get("branches", 1))
    if most > MAX_BRANCHES:
        raise SpaceError(
            f"{label}: layers, layer.branches: up to {show(_largest(spec['layers']))} layers of "
            f"{show(_largest(spec.get('layer', {}).get('branches', 1)))} branches; a model may have at most "
            f"{MAX_BRANCHES} branches"
        )
    d_ff = spec.get("layer", {}).get("d_ff", 2)
    channels = _largest(d_ff) * max(widths) * _largest(spec.get("layer", {}).get("branches", 1))
    if not channels < 2**63:
        raise SpaceError(f"{label}: layer.d_ff: up to {show(channels)} feed-forward channels; at most 2**63 - 1 can be")
    if int(round(_smallest(d_ff) * min(widths))) < 1:
        raise SpaceError(
            f"{label}: layer.d_ff: {show(_smallest(d_ff))} times width {min(widths)} is a feed-forward of no channels"
        )


def _check_shapes(spec: dict, label: str, widths: list) -> None:
    """Strides that can stop at the cap and that some block takes, odd kernels, head counts that divide widths."""

    def choices(section: str, key: str, default) -> list:
        return _as_list(spec.get(section, {}).get(key, default))

    strides = choices("layer", "stride", 1)
    if 1 not in strides:
        raise SpaceError(
            f"{label}: layer.stride: {show(strides)} lacks 1, which a layer past the total-stride cap must take"
        )
    if max(strides) > 1 and not set(choices("branch", "type", "conv_block")) & set(_stridable()):
        raise SpaceError(
            f"{label}: layer.stride: {show(strides)} strides, but no branch.type can ({', '.join(_stridable())})"
        )
    for key in ("kernel", "attn_kernel"):
        even = [k for k in choices("branch", key, 3) if k % 2 == 0]
        if even:
            raise SpaceError(f"{label}: branch.{key}: {show(even[0])} is even; 'same' padding needs an odd kernel")
    if True in choices("branch", "se", False) and "jasper_block" in choices("branch", "type", "conv_block"):
        narrow = min(widths)
        if narrow // 8 < 1:  # jasper_block's SE bottleneck is width // se_reduction (8) channels
            raise SpaceError(f"{label}: branch.se: width {narrow} leaves squeeze-and-excitation no channels (< 8)")
    for h in choices("branch", "heads", 4):
        bad = next((w for w in widths if w % h), None)
        if bad is not None:
            raise SpaceError(
                f"{label}: branch.heads: {show(h)} does not divide width {show(bad)}; every head count must divide "
                "every width"
            )


def _suggest(trial, name: str, dist):
    if isinstance(dist, list):
        return trial.suggest_categorical(name, dist)
    if isinstance(dist, dict):
        if isinstance(dist["low"], int) and isinstance(dist["high"], int) and not dist.get("log"):
            return trial.suggest_int(name, dist["low"], dist["high"])
        return trial.suggest_float(name, float(dist["low"]), float(dist["high"]), log=bool(dist.get("log")))
    return dist  # fixed: not a parameter


def _choose(trial, name: str, narrowed: str, dist, allowed) -> Any:
    """Sample from the choices of ``dist`` that ``allowed`` keeps, so no value is ever overridden afterwards.

    When every choice is allowed this is the plain parameter ``name``. A narrower set is a parameter of
    its own, ``narrowed`` (an Optuna parameter keeps one set of choices for the whole study), and a
    single survivor is no choice at all, so it is not recorded.
    """
    choices = _as_list(dist)
    kept = [c for c in choices if allowed(c)]
    if len(kept) == len(choices):
        return _suggest(trial, name, dist)
    if len(kept) == 1:
        return kept[0]
    return trial.suggest_categorical(narrowed, kept)


def branch_kwargs(btype: str, width: int, stride: int, knobs: dict) -> dict:
    """The kwargs of one branch of model width ``width`` from the space's per-branch choices (the block's config
    dataclass maps them: :meth:`stt.model.blocks.BlockConfig.from_knobs`)."""
    return BLOCKS[btype].Config.from_knobs(width, stride, {**_KNOBS, **knobs})


def branch_values(btype: str, kw: dict) -> dict:
    """What a space says about a normalised branch: the inverse of :func:`branch_kwargs`."""
    return {"type": btype, **block_config(btype, kw).to_knobs()}


def sample_config(trial, space: Space, max_total_stride: int = 4) -> RunConfig:
    """Sample one run config (define-by-run; stable parameter names). Always validates and is feasible.

    Every recorded parameter is a property of the built model: choices that could not build (a stride
    past the corpus's cap, a block type that cannot stride) are never offered, rather than sampled and
    overridden, so ``sample_config(FixedTrial(trial.params), ...)`` rebuilds the same config.
    """
    s = space.spec
    if space.template is not None:
        return _sample_template(trial, space, max_total_stride)
    layer_s, branch_s = s.get("layer", {}), s.get("branch", {})
    cap = min(max_total_stride, s.get("max_total_stride", max_total_stride))
    width = _suggest(trial, "width", s["width"])
    n_layers = _suggest(trial, "layers", s["layers"])
    layers, total = [], 1
    for i in range(n_layers):
        room = cap // total
        stride = _choose(
            trial,
            f"layer{i}.stride",
            f"layer{i}.stride_upto{room}",
            layer_s.get("stride", 1),
            lambda v, room=room: v <= room,
        )
        total *= stride
        n_br = _suggest(trial, f"layer{i}.branches", layer_s.get("branches", 1))
        branches = []
        for j in range(n_br):
            p = f"layer{i}.branch{j}"
            types = branch_s.get("type", "conv_block")
            btype = _choose(
                trial,
                f"{p}.type",
                f"{p}.strided_type",
                types,
                lambda t, stride=stride: stride == 1 or BLOCKS[t].Config.can_stride,
            )
            knobs = {}
            for knob in _KNOBS:  # a fixed order: stable parameter names and sampling order across block types
                if knob in BLOCKS[btype].Config.knobs and (_KNOBS[knob] is not None or knob in branch_s):
                    knobs[knob] = _KNOB_TYPES[knob](_suggest(trial, f"{p}.{knob}", branch_s.get(knob, _KNOBS[knob])))
            branches.append([btype, branch_kwargs(btype, width, stride, knobs)])
        branches[0][1][BLOCKS[branches[0][0]].Config.in_key] = width
        layer = [branches]
        # a single branch may stand alone (a plain conv layer, e.g. a subsampling stem); parallel ones are merged
        if n_br > 1 or _suggest(trial, f"layer{i}.single_ff", layer_s.get("single_ff", True)):
            d_ff = int(round(_suggest(trial, f"layer{i}.d_ff", layer_s.get("d_ff", 2)) * width * n_br))
            layer.append(
                [
                    [
                        "feed_forward",
                        {
                            "output_size": width,
                            "d_ff": d_ff,
                            "dropout": branch_values(*branches[0]).get("dropout", 0.0),
                        },
                    ]
                ]
            )
        layers.append(layer)
    train = {}
    for key, dist in s.get("train", {}).items():
        train[key] = _suggest(trial, f"train.{key}", dist)
    return RunConfig(layers=load_layer_config(layers), frontend=s.get("frontend", "fbank"), train=TrainConfig(**train))


def _template_fits(space: Space, max_total_stride: int) -> RunConfig:
    """The space's template, if its strides fit the corpus's cap (nothing a template space samples changes them)."""
    template = space.template
    if template.layers.total_stride > max_total_stride:
        raise SpaceError(
            f"{space.name}: template: {space.spec['template']} strides by {template.layers.total_stride}, past this "
            f"corpus's cap of {max_total_stride} (its shortest utterance would have fewer frames than letters)"
        )
    return template


def _sample_template(trial, space: Space, max_total_stride: int) -> RunConfig:
    template = _template_fits(space, max_total_stride)
    return build_template(space.spec, template, lambda name, dist, builds: _suggest(trial, name, dist))


class _TemplateReader:
    """Answers a template space's decisions from an existing config (see :class:`_Reader`)."""

    def __init__(self, run: RunConfig, template: RunConfig, label: str, train_keys=()):
        self.run, self.template, self.label, self.params = run, template, label, {}
        self.train_keys = set(train_keys)

    def __call__(self, name: str, dist, builds):
        if not isinstance(dist, (list, dict)):
            return dist  # fixed: not a parameter
        if name.startswith("train.") and name[len("train.") :] not in self.train_keys:
            return dist[0] if isinstance(dist, list) else dist["low"]
        actual = template_actual(self.run, self.template, name)
        if isinstance(dist, list):
            ok = [v for v in dist if builds(v) == actual and isinstance(v, bool) == isinstance(actual, bool)]
        else:
            fits = _number(actual) and dist["low"] <= actual <= dist["high"] and not isinstance(actual, bool)
            ok = [actual if isinstance(dist["low"], int) and isinstance(dist["high"], int) else float(actual)]
            ok = ok if fits else []
        if not ok:
            raise SpaceError(
                f"{self.label}: not in the space: {name} gives {actual!r}, which no choice of {show(dist)} builds"
            )
        self.params[name] = ok[0]
        return ok[0]


class _Reader:
    """Answers a sampler's questions from an existing config, to find the parameters that rebuild it."""

    def __init__(self, run: RunConfig, label: str, train_keys=()):
        self.run, self.label, self.params = run, label, {}
        self.train_keys = set(train_keys)  # the training settings the config states; the others are left to the sampler

    def _value(self, name: str):
        layers = self.run.layers
        parts = name.split(".")
        if name == "width":
            return layers.in_width
        if name == "layers":
            return len(layers.layers)
        if parts[0] == "train":
            return getattr(self.run.train, parts[1])
        i = int(parts[0][len("layer") :])
        if i >= len(layers.layers):
            return None
        blocks = layers.layers[i]
        key = parts[-1]
        if key.startswith("stride_upto") or key == "stride":
            return layers.layer_stride(i)
        if key == "branches":
            return len(blocks[0])
        if key == "single_ff":
            return len(blocks) > 1
        if key == "d_ff":  # a multiple of the concatenated width, matched by the width it builds (see _matches)
            return blocks[-1][0][1]["d_ff"] if len(blocks) > 1 else None
        j = int(parts[1][len("branch") :])
        if j >= len(blocks[0]):
            return None
        values, key = branch_values(*blocks[0][j]), "type" if key.endswith("type") else key
        if key not in values:  # the space took its only type that fits without asking; the config has another
            raise SpaceError(
                f"{self.label}: not in the space: layer{i}.branch{j} is a {values['type']}, which has no {key}"
            )
        return values[key]

    def _matches(self, name: str, choice, value) -> bool:
        if name.endswith(".d_ff"):
            i = int(name.split(".")[0][len("layer") :])
            try:
                return round(choice * self.run.layers.in_width * len(self.run.layers.layers[i][0])) == value
            except OverflowError:  # a width past a float's range: no d_ff of the space builds it
                return False
        return choice == value and isinstance(choice, bool) == isinstance(value, bool)

    def _answer(self, name: str, ok, expected: str):
        value = self._value(name)
        for v in ok:
            if self._matches(name, v, value):
                self.params[name] = v
                return v
        raise SpaceError(f"{self.label}: not in the space: {name} is {value!r}, the space allows {expected}")

    def _unstated(self, name: str) -> bool:
        return name.startswith("train.") and name[len("train.") :] not in self.train_keys

    def suggest_categorical(self, name, choices):
        if self._unstated(name):
            return choices[0]
        return self._answer(name, choices, str(list(choices)))

    def suggest_int(self, name, low, high):
        if self._unstated(name):
            return low
        value = self._value(name)
        return self._answer(name, [value] if isinstance(value, int) and low <= value <= high else [], f"{low}..{high}")

    def suggest_float(self, name, low, high, log=False):
        if self._unstated(name):
            return low
        value = self._value(name)
        ok = isinstance(value, (int, float)) and low <= value <= high
        return self._answer(name, [float(value)] if ok else [], f"{low}..{high}")


def params_of(run: RunConfig, space: Space, max_total_stride: int, label: str, train_keys=None) -> dict:
    """The parameters under which ``space`` samples ``run``'s architecture (a seed to enqueue).

    Training settings the space searches come from ``run`` when it states them (``train_keys``; default
    all), and are left to the sampler otherwise; the space's fixed ones apply to it as to every
    candidate. Raises SpaceError naming the first parameter ``run`` does not fit.
    """
    train_keys = TrainConfig.__dataclass_fields__ if train_keys is None else train_keys
    if space.template is not None:
        template = _template_fits(space, max_total_stride)
        types = [[t for blk in layer for t, _ in blk] for layer in run.layers.layers]
        shape = (run.input_proj, run.residual, len(types), all(t == ["jasper_block"] for t in types))
        if shape != (template.input_proj, template.residual, len(template.layers.layers), True):
            raise SpaceError(
                f"{label}: not in the space: not a form of the template {space.spec['template']} "
                f"({len(template.layers.layers)} layers of one jasper_block each, input_proj {template.input_proj}, "
                f"residual {str(template.residual).lower()})"
            )
        reader = _TemplateReader(run, template, label, train_keys)
        rebuilt = build_template(space.spec, template, reader)
        if rebuilt.to_dict()["model"] != run.to_dict()["model"]:  # a stride, dilation or form the space keeps
            raise SpaceError(
                f"{label}: not in the space: its layers are not a form of the template {space.spec['template']}"
            )
        return reader.params
    reader = _Reader(run, label, train_keys)
    rebuilt = sample_config(reader, space, max_total_stride)
    if (rebuilt.residual, rebuilt.input_proj) != (run.residual, run.input_proj):
        raise SpaceError(f"{label}: not in the space: model.residual/input_proj must be true/base")
    for i, (mine, theirs) in enumerate(zip(rebuilt.layers.to_list(), run.layers.to_list())):
        if mine != theirs:  # a pattern the space cannot express (e.g. a feed-forward dropout of its own)
            raise SpaceError(
                f"{label}: not in the space: layers[{i}] is {theirs}; the nearest the space can sample is {mine}"
            )
    return reader.params


def load_seed(src: str, space: Space, max_total_stride: int) -> tuple[dict, str]:
    """A seed config (a path, or a shipped config by name: ``small``) -> (its parameters, its label)."""
    from stt.model.layer_config import read_source
    from stt.train.run_config import load_run_config

    name = src if str(src).endswith((".yaml", ".yml")) else f"{src}.yaml"
    try:
        raw, _ = read_source(name)
        run = load_run_config(raw)
    except ConfigError as e:
        raise SpaceError(f"seed {show_key(src)}: {e}") from None
    stated = (raw.get("train") or {}) if isinstance(raw, dict) else {}
    return params_of(run, space, max_total_stride, f"seed {src}", train_keys=stated), str(src)
