"""Template spaces: search around a published model, block by block.

A template space names a shipped config (or a path) of residual ``jasper_block`` layers, such as QuartzNet
5x5, and searches each residual block's form while the model keeps its skeleton: the prologue, the number
of blocks, their strides and dilations, and the epilogue. ``spaces/quartznet.yaml``::

    template: quartznet5x5             # the skeleton; list it in seeds to train it first
    seeds: [quartznet5x5]
    width_multiplier: [0.25, 0.5, 1.0] # every layer's channels times this (rounded to a multiple of 8)
    block:                             # per residual block of the template
      repeat: [1, 2, 3, 5]             # R sub-modules
      kernel_scale: [0.5, 0.75, 1.0]   # the template's kernel times this (rounded to an odd width)
      channel_scale: [0.5, 1.0, 2.0]   # the block's channels (after the width multiplier) times this
      separable: [true, false]         # time-channel separable convs, or full ones
      se: [false, true]                # squeeze-and-excitation
      dropout: {low: 0.0, high: 0.2}
    train:
      lr: {low: 0.002, high: 0.01, log: true}

Parameter names: ``width_multiplier``, ``block2.repeat``, ``block2.kernel_scale``, ... (``blockI`` is the
I-th residual block of the template, counted from 0), ``train.lr``. Every one is a property of the built
model, read back from a config by :func:`template_params_of` (a seed must be a point of the space).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

from stt.core.errors import ConfigError, show
from stt.model.layer_config import load_layer_config
from stt.train.run_config import RunConfig, TrainConfig, load_run_config

# per residual block, the keys of a template space's ``block`` with their kinds (space._KINDS)
BLOCK_KINDS = {
    "repeat": "count",
    "kernel_scale": "positive",
    "channel_scale": "positive",
    "separable": "flag",
    "se": "flag",
    "dropout": "fraction",
}


def round_channels(c: float) -> int:
    """Channels of a scaled layer: the nearest multiple of 8, at least 8 (SE's bottleneck is channels // 8)."""
    return max(8, int(round(c / 8)) * 8)


def odd_kernel(k: float) -> int:
    """A scaled kernel: the nearest odd width (a centred 'same' window), at least 1."""
    return max(1, 2 * int(round((k - 1) / 2)) + 1)


TEMPLATE_CONFIG = "template_config"  # the template's run config itself, added to a space's text when it is read


def load_template(spec: dict, label: str) -> RunConfig:
    """The template a space names, checked: every layer one ``jasper_block`` branch, at least one residual.

    A space read from its file gets the template's config written into its text (``template_config``, see
    :func:`with_template_config`), so a study stored with that text (resume, workers on other hosts) builds
    from the config it started with, never from a file that may have changed, moved or been shadowed since.
    """
    name = spec["template"]
    if not isinstance(name, str):
        raise ConfigError(f"{label}: template: expected a shipped config name or a path, got {show(name)}")
    where = f"{TEMPLATE_CONFIG} (of {name})" if TEMPLATE_CONFIG in spec else name
    try:
        if TEMPLATE_CONFIG in spec:
            run = load_run_config(spec[TEMPLATE_CONFIG])
        else:
            run = load_run_config(name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    except ConfigError as e:
        raise ConfigError(
            f"{label}: template: {where}: {e}" if TEMPLATE_CONFIG in spec else f"{label}: template: {e}"
        ) from None
    for i, layer in enumerate(run.layers.layers):
        if len(layer) != 1 or len(layer[0]) != 1 or layer[0][0][0] != "jasper_block":
            raise ConfigError(f"{label}: template: {name}: layer {i} is not one jasper_block, which a template needs")
    if not residual_blocks(run):
        raise ConfigError(f"{label}: template: {name} has no residual jasper_block to search")
    return run


def with_template_config(text: str, spec: dict, template: RunConfig) -> str:
    """A template space's text with its template's config added (once): what a study stores."""
    if TEMPLATE_CONFIG in spec:
        return text
    spec[TEMPLATE_CONFIG] = template.to_dict()
    return (
        text.rstrip("\n")
        + f"\n# written when the space was read: {spec['template']} as it was then\n"
        + (f"{TEMPLATE_CONFIG}: {json.dumps(spec[TEMPLATE_CONFIG])}\n")
    )


def residual_blocks(run: RunConfig) -> list[int]:
    """The layers a template space searches: its residual jasper_blocks, in order."""
    return [i for i, layer in enumerate(run.layers.layers) if layer[0][0][1]["residual"]]


def check_template_space(spec: dict, label: str) -> RunConfig:
    """Validate what is a template space's own (its keys and distributions are checked by ``search.space`` like
    any space's); returns its template. Fills in the template's frontend and epochs where the space leaves them
    out."""
    template = load_template(spec, label)
    if spec.setdefault("frontend", template.frontend) != template.frontend:
        raise ConfigError(
            f"{label}: frontend: {show(spec['frontend'])}, but the template {spec['template']} is for "
            f"{template.frontend}"
        )
    block = spec.get("block", {})
    for k in ("repeat", "kernel_scale", "channel_scale", "width_multiplier"):  # a range would give values that
        where = spec if k == "width_multiplier" else block  # round to the same layer: not one model per value
        if isinstance(where.get(k), dict):
            raise ConfigError(
                f"{label}: {'' if where is spec else 'block.'}{k}: expected a list of choices, not a range"
            )
    _check_distinct(spec, template, label)
    # the template's schedule is the full fidelity unless the space says otherwise
    spec.setdefault("train", {}).setdefault("epochs", template.train.epochs)
    return template


MAX_CHANNELS = 16384  # the widest layer a template space may build
MAX_KERNEL = 1023  # the widest kernel
MAX_REPEAT = 64  # the most sub-modules in one block


def _choices(value) -> list:
    return value if isinstance(value, list) else [value]


def _check_distinct(spec: dict, template: RunConfig, label: str) -> None:
    """Every choice builds a different model, within bounds: two values that round to the same channels or
    kernel would record a parameter the model does not show."""
    layers = template.layers.layers
    searched = residual_blocks(template)
    block = spec.get("block", {})
    wms = _choices(spec.get("width_multiplier", 1.0))
    built = {}
    for wm in wms:
        shape = _fixed_widths(template, wm)
        if shape in built:
            raise ConfigError(
                f"{label}: width_multiplier: {show(built[shape])} and {show(wm)} build the same widths; list "
                "choices that differ"
            )
        built[shape] = wm
    if max(c for shape in built for c in shape) > MAX_CHANNELS:
        raise ConfigError(f"{label}: width_multiplier: up to {show(max(wms))} gives over {MAX_CHANNELS} channels")
    if max(_choices(block.get("repeat", 1))) > MAX_REPEAT:
        raise ConfigError(f"{label}: block.repeat: at most {MAX_REPEAT} sub-modules a block")
    for n, i in enumerate(searched):
        kw = layers[i][0][0][1]
        for key, of, limit, what in (
            ("kernel_scale", [kw["kernel"]], MAX_KERNEL, "a kernel of"),
            ("channel_scale", [round_channels(kw["out_chan"] * wm) for wm in wms], MAX_CHANNELS, "channels"),
        ):
            build = odd_kernel if key == "kernel_scale" else round_channels
            for base in of:
                seen = {}
                for v in _choices(block.get(key, 1.0)):
                    got = build(base * v)
                    if got in seen:
                        raise ConfigError(
                            f"{label}: block.{key}: {show(seen[got])} and {show(v)} both give block{n} {what} {got}; "
                            "list choices that differ"
                        )
                    if got > limit:
                        raise ConfigError(f"{label}: block.{key}: {show(v)} gives block{n} {what} {got}, over {limit}")
                    seen[got] = v


def _fixed_widths(template: RunConfig, wm: float) -> tuple:
    """The channels of the layers a template space does not search, at width multiplier ``wm``."""
    searched = residual_blocks(template)
    layers = template.layers.layers
    return tuple(round_channels(layers[i][0][0][1]["out_chan"] * wm) for i in range(len(layers)) if i not in searched)


def build_template(spec: dict, template: RunConfig, ask: Callable) -> RunConfig:
    """The config a template space's decisions build. ``ask(name, dist, builds)`` gives each decision's value;
    ``builds(value)`` is what that value makes of the model (the reader matches it against a config)."""
    layers = [[[[t, dict(kw)] for t, kw in blk] for blk in layer] for layer in template.layers.to_list()]
    wm = ask("width_multiplier", spec.get("width_multiplier", 1.0), lambda v: _fixed_widths(template, v))
    searched = residual_blocks(template)
    block = spec.get("block", {})
    for i, layer in enumerate(layers):
        kw = layer[0][0][1]
        channels = round_channels(kw["out_chan"] * wm)
        if i in searched:
            b, c0, k0 = f"block{searched.index(i)}", channels, kw["kernel"]
            kw["repeat"] = ask(f"{b}.repeat", block.get("repeat", kw["repeat"]), lambda v: v)
            k_scale = ask(f"{b}.kernel_scale", block.get("kernel_scale", 1.0), lambda v, k0=k0: odd_kernel(k0 * v))
            kw["kernel"] = odd_kernel(k0 * k_scale)
            scale = ask(f"{b}.channel_scale", block.get("channel_scale", 1.0), lambda v, c0=c0: round_channels(c0 * v))
            channels = round_channels(c0 * scale)
            kw["separable"] = ask(f"{b}.separable", block.get("separable", kw["separable"]), lambda v: v)
            kw["se"] = ask(f"{b}.se", block.get("se", kw["se"]), lambda v: v)
            kw["dropout"] = float(ask(f"{b}.dropout", block.get("dropout", kw["dropout"]), lambda v: v))
        kw["out_chan"] = channels
        kw.pop("pad", None)  # derived again for the new kernel
        if i:
            kw.pop("in_chan", None)  # the previous layer's width
    train = dataclasses.asdict(template.train)
    for key, dist in spec.get("train", {}).items():
        train[key] = ask(f"train.{key}", dist, lambda v: v)
    return dataclasses.replace(template, layers=load_layer_config(layers), train=TrainConfig(**train))


def template_actual(run: RunConfig, template: RunConfig, name: str):
    """What ``run`` says about one parameter of its template space (None: the run has no such block)."""
    if name.startswith("train."):
        return getattr(run.train, name[len("train.") :])
    layers = run.layers.layers
    if len(layers) != len(template.layers.layers):
        return None
    if name == "width_multiplier":
        searched = residual_blocks(template)
        return tuple(layer[0][0][1]["out_chan"] for i, layer in enumerate(layers) if i not in searched)
    b, key = name.split(".", 1)
    i = residual_blocks(template)[int(b[len("block") :])]
    kw = layers[i][0][0][1]
    return {"channel_scale": kw["out_chan"], "kernel_scale": kw["kernel"]}.get(key, kw.get(key))
