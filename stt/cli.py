"""The ``stt`` command line: describe, prepare, train, eval, transcribe, lm build, tune-decoder."""

from __future__ import annotations

import argparse
import logging
import sys

from stt import cli_data, cli_decode, cli_train  # each command lives beside its module
from stt.cli_args import OneLineParser, positive_int
from stt.errors import ConfigError, STTError, one_line


def _cmd_describe(args) -> None:
    from stt.blocks import describe_blocks
    from stt.model import STTModel, describe
    from stt.run_config import load_run_config

    if args.blocks:
        print(describe_blocks(), end="")
        return
    if args.config is None:
        raise ConfigError("describe: give a config (or --blocks for the block types and their keys)")
    run = load_run_config(args.config)
    model = STTModel(
        run.layers, input_size=args.input_size or run.input_size, input_proj=run.input_proj, output_size=None
    )
    if args.print_model:
        print(model)
    d = describe(model)
    size = args.input_size or run.input_size
    print(f"config:             {args.config}")
    print(f"input:              {size}-d features -> {run.input_proj or 'no'} projection -> width {d['width']}")
    print(f"parameters:         {d['parameters']:,}")
    print(f"layers:             {d['layers']} (width {d['width']} -> {d['output_width']})")
    print(f"total stride:       {d['total_stride']} ({d['output_rate_hz']:g} output frames/s at 100 Hz input)")
    print(f"receptive field:    {d['receptive_field_frames']} frames ({d['receptive_field_frames'] * 10} ms at 100 Hz)")
    print(f"forward GFLOPs/s:   {d['gflops_per_second']:.3f} (per second of 100 Hz input)")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="stt", description="CTC speech recognisers from nested block configs.")
    sub = p.add_subparsers(dest="command", required=True)

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

    cli_data.add_commands(sub)
    cli_train.add_commands(sub)
    cli_decode.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except STTError as e:
        print(f"stt {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stt {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
