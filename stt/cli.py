"""The ``stt`` command line: describe, prepare, train, eval, transcribe, lm build, tune-decoder."""

from __future__ import annotations

import argparse
import logging
import sys

from stt.errors import one_line


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line naming it, not the whole usage block (``--help`` still shows it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= {low}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--epochs 0`` is an error, not "use the default")."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _integer(text, 0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g}: expected a number > 0")
    return value


def _cmd_describe(args) -> None:
    from stt.model import STTModel, describe
    from stt.run_config import load_run_config

    run = load_run_config(args.config)
    model = STTModel(run.layers, input_size=args.input_size or run.input_size, input_proj=run.input_proj,
                     output_size=None)  # fmt: skip
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
    d.add_argument("config", help="a layer config or run config YAML (or a shipped name such as seed_base.yaml)")
    d.add_argument("--input-size", type=positive_int, default=None, help="feature size (default 80, the fbank frontend's; the design note used 512-d wav2vec)")
    d.add_argument("--print-model", action="store_true", help="also print the module tree")
    d.set_defaults(func=_cmd_describe)

    from stt import cli_data, cli_decode, cli_train  # the data, training and decoding commands live beside their modules

    cli_data.add_commands(sub)
    cli_train.add_commands(sub)
    cli_decode.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from stt.errors import STTError

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
