"""``stt describe``: what a config costs (parameters, stride, receptive field, GFLOPs), or the block types."""

from __future__ import annotations

from stt.core.args import positive_int
from stt.core.errors import ConfigError


def _cmd_describe(args) -> None:
    from stt.model.blocks import describe_blocks
    from stt.model.measure import describe
    from stt.model.network import build_model
    from stt.train.run_config import load_run_config

    if args.blocks:
        print(describe_blocks(), end="")
        return
    if args.config is None:
        raise ConfigError("describe: give a config (or --blocks for the block types and their keys)")
    run = load_run_config(args.config)
    size = args.input_size or run.input_size
    from stt.data.text import LETTERS

    model = build_model(run, size, len(LETTERS))
    if args.print_model:
        print(model)
    d = describe(model)
    encoder = d["parameters"] - sum(p.numel() for p in model.output_proj.parameters())
    print(f"config:             {args.config}")
    print(f"input:              {size}-d features -> {run.input_proj or 'no'} projection -> width {d['width']}")
    print(f"parameters:         {d['parameters']:,} with the {len(LETTERS)}-letter CTC output ({encoder:,} without)")
    print(f"layers:             {d['layers']} (width {d['width']} -> {d['output_width']})")
    print(f"total stride:       {d['total_stride']} ({d['output_rate_hz']:g} output frames/s at 100 Hz input)")
    print(f"receptive field:    {d['receptive_field_frames']} frames ({d['receptive_field_frames'] * 10} ms at 100 Hz)")
    print(f"forward GFLOPs/s:   {d['gflops_per_second']:.3f} (per second of 100 Hz input)")


def add_commands(sub) -> None:
    d = sub.add_parser("describe", help="parameters, stride, receptive field and GFLOPs of a config")
    d.add_argument(
        "config", nargs="?", help="a layer config or run config YAML (or a shipped name such as seed_base.yaml)"
    )
    d.add_argument("--blocks", action="store_true", help="list the block types, their keys, defaults and docs instead")
    d.add_argument(
        "--input-size",
        type=positive_int,
        default=None,
        help="feature size (default 80, the fbank frontend's; the design note used 512-d wav2vec)",
    )
    d.add_argument("--print-model", action="store_true", help="also print the module tree")
    d.set_defaults(func=_cmd_describe)
