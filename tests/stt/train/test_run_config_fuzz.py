"""Any file handed to ``stt train --config`` loads, or is one line naming the file: never a traceback, a hang or
a blow-up.

The fuzz drives :func:`~stt.train.run_config.load_run_config` on a path, as the command does (reading, decoding,
YAML, validation), each file within 2 s of CPU and 500 MB of peak RSS growth (``tests/yaml_strategies.py``);
the command prints an :class:`~stt.core.errors.STTError` as one line and exits 2, which the subprocess test checks
on a few fixed files.
"""

from __future__ import annotations

import sys
from importlib import resources

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from stt.core.errors import STTError
from stt.train.run_config import RunConfig, load_run_config
from tests.yaml_strategies import BILLION_LAUGHS, Budget, assert_one_line_error, files, run_commands

TINY = {
    "frontend": "fbank",
    "train": {"epochs": 1, "lr": 0.005, "batch_frames": 3000, "seed": 0, "compile": "auto"},
    "model": {
        "input_proj": "base",
        "residual": True,
        "layers": [
            [[["conv_block", {"in_chan": 32, "out_chan": 32, "kernel": 5, "stride": 2}]]],
            [
                [
                    ["separable_conv_block", {"out_chan": 32, "kernel": 5}],
                    ["attention_conv_block", {"n_heads": 4, "kernel": 3}],
                ],
                [["feed_forward", {"output_size": 32, "d_ff": 64, "dropout": 0.1}]],
            ],
        ],
    },
}
VALID = [
    TINY,
    TINY["model"]["layers"],  # a bare layer config is a run config too
    yaml.safe_load((resources.files("stt") / "configs" / "small.yaml").read_text()),
]


def _fuzz(tmp_path_factory, examples: int):
    path = tmp_path_factory.mktemp("fuzz") / "run.yaml"
    budget = Budget()

    @settings(
        max_examples=examples,
        deadline=None,  # Budget bounds each example's CPU time: a wall-clock deadline flakes on a busy host
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=files(VALID))
    def one(data: bytes):
        path.write_bytes(data)
        with budget.example():
            try:
                run = load_run_config(str(path))
            except STTError as e:
                assert_one_line_error(e, path)
                budget.count("one-line error")
            else:
                assert isinstance(run, RunConfig)
                budget.count("loaded")

    one()
    return budget


@pytest.mark.parametrize("examples", [200, pytest.param(2000, marks=pytest.mark.slow)])
def test_any_run_config_file_loads_or_is_one_line_naming_it(tmp_path_factory, examples):
    budget = _fuzz(tmp_path_factory, examples)
    print(f"run config fuzz: {budget}")


NASTY = {
    "laughs.yaml": f"train: {{epochs: 1}}\nmodel: {{layers: {BILLION_LAUGHS}}}\n".encode(),
    "utf16.yaml": yaml.safe_dump(TINY).encode("utf-16"),
    "huge_int.yaml": yaml.safe_dump({**TINY, "train": {"seed": 10**30}}).encode(),
}


@pytest.mark.slow
def test_stt_train_refuses_nasty_configs_in_one_line_exit_2(tmp_path):
    """The command as run: exit 2, one stderr line naming the file, no traceback, peak RSS under 500 MB."""
    work = tmp_path / "work"
    work.mkdir()
    for name, data in NASTY.items():
        (work / name).write_bytes(data)
    argv = [sys.executable, "-m", "stt.cli", "train", "--data", "nodata", "--out", "out", "--config"]
    results = run_commands({name: [*argv, name] for name in NASTY}, work, tmp_path)
    for name, (status, out, err, peak) in results.items():
        lines = err.splitlines()
        assert status == 2 and len(lines) == 1 and "Traceback" not in err, (name, status, err)
        assert lines[0].startswith(f"stt train: error: {name}: "), lines
        assert out == ""
        assert peak < 500 * 2**20, (name, peak)
    assert sorted(p.name for p in work.iterdir()) == sorted(NASTY)  # no run directory appeared
