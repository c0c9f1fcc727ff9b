"""Any file handed to ``stt-search launch --space`` loads and samples, or is one line naming the file: never a
traceback, a hang or a blow-up.

The fuzz takes a file the way a launch and its trials do: :func:`~search.space.load_space` (read, decode, YAML,
validate), the study's settings with the space's text and the space read back from them
(:func:`~search.space.space_from_text`, as ``create_study`` does), the fidelity plan, the space's seed configs,
then candidates sampled as a trial samples them, each of which must be a run config ``stt train`` reads; each
file within 2 s of CPU and 500 MB of peak RSS growth (``tests/yaml_strategies.py``). The command prints an
:class:`~stt.core.errors.STTError` as one line and exits 2, which the subprocess test checks on a few fixed files.
"""

from __future__ import annotations

import sys
from importlib import resources

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from search.settings import StudySettings
from search.space import Space, load_seed, load_space, sample_config, space_from_text
from stt.core.errors import STTError
from stt.train.run_config import load_run_config
from tests.yaml_strategies import BILLION_LAUGHS, Budget, assert_one_line_error, files, run_commands

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {
    "frontend": "fbank",
    "seeds": ["small"],
    "width": [16, 24],
    "layers": {"low": 1, "high": 3},
    "max_total_stride": 4,
    "layer": {"stride": [1, 2], "branches": {"low": 1, "high": 2}, "d_ff": [1, 1.5], "single_ff": [False, True]},
    "branch": {
        "type": ["conv_block", "separable_conv_block", "attention_conv_block", "conv_attention_conv_block"],
        "kernel": [3, 5],
        "attn_kernel": [3],
        "dilation": [1, 2],
        "glu": [False, True],
        "heads": [2, 4],
        "dropout": {"low": 0.0, "high": 0.2},
    },
    "train": {"lr": {"low": 0.001, "high": 0.01, "log": True}, "batch_frames": [3000, 6000], "epochs": 2},
}
VALID = [TINY, *(yaml.safe_load((resources.files("spaces") / f"{n}.yaml").read_text()) for n in ("small", "seed"))]


def launch_would(path, data_dir) -> Space:
    """What a launch does with ``--space path`` before it trains anything (its errors name the file)."""
    space = load_space(str(path))
    study = StudySettings(space_text=space.text, space_name=space.name, data_dir=str(data_dir), trials=2, pruner="none")
    space = space_from_text(study.space_text, study.space_name)  # create_study: the space as stored
    study.fidelity(space)
    for src in space.spec.get("seeds", []):
        try:
            load_seed(src, space, 4)
        except STTError:  # a seed that does not fit the space is the user's to fix: one line, tested elsewhere
            pass
    return space


def trials_would(space: Space) -> None:
    """What the launch's first trials sample: each candidate a run config (``stt-search export`` writes it,
    ``stt train`` reads it). A candidate that cannot build is a one-line error the trial records."""
    trials = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(2):
        run = sample_config(trials.ask(), space, max_total_stride=4)
        load_run_config(run.to_dict())


def _fuzz(tmp_path_factory, examples: int):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "space.yaml"
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
                space = launch_would(path, folder)
            except STTError as e:
                assert_one_line_error(e, path)
                budget.count("one-line error")
                return
            try:
                trials_would(space)
            except STTError as e:  # the objective records it on the trial (BUILD_ERROR); so far never seen
                assert "\n" not in str(e), str(e)
                budget.count("candidate cannot build", str(e))
            else:
                budget.count("loaded and sampled")

    one()
    return budget


@pytest.mark.parametrize("examples", [200, pytest.param(2000, marks=pytest.mark.slow)])
def test_any_space_file_loads_and_samples_or_is_one_line_naming_it(tmp_path_factory, examples):
    budget = _fuzz(tmp_path_factory, examples)
    print(f"space fuzz: {budget}")


NASTY = {
    "laughs.yaml": f"width: {BILLION_LAUGHS}\nlayers: 2\n".encode(),
    "utf16.yaml": yaml.safe_dump(TINY).encode("utf-16"),
    "huge_int.yaml": yaml.safe_dump({**TINY, "layers": 10**30}).encode(),
}


@pytest.mark.slow
def test_stt_search_launch_refuses_nasty_spaces_in_one_line_exit_2(tmp_path):
    """The command as run: exit 2, one stderr line naming the file, no traceback, no study database, peak RSS
    under 500 MB."""
    work = tmp_path / "work"
    work.mkdir()
    for name, data in NASTY.items():
        (work / name).write_bytes(data)
    argv = [sys.executable, "-m", "search.cli", "launch", "--data", "nodata", "--study", "s"]
    argv += ["--storage", "sqlite:///studies.db", "--runs-dir", "runs", "--space"]
    results = run_commands({name: [*argv, name] for name in NASTY}, work, tmp_path)
    for name, (status, out, err, peak) in results.items():
        lines = err.splitlines()
        assert status == 2 and len(lines) == 1 and "Traceback" not in err, (name, status, err)
        assert lines[0].startswith(f"stt-search launch: error: {name}: "), lines
        assert out == ""
        assert peak < 500 * 2**20, (name, peak)
    assert sorted(p.name for p in work.iterdir()) == sorted(NASTY)  # no database, no runs folder
