"""Search spaces: every shipped space samples configs that validate, build and run; bad spaces are named."""

import optuna
import pytest
import torch

from search.space import SpaceError, load_space, max_feasible_stride, sample_config, validate_space
from stt.model import STTModel

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.slow
@pytest.mark.parametrize("space_name,max_stride", [("small.yaml", 4), ("seed.yaml", 4), ("small.yaml", 2)])
def test_500_random_samples_validate_build_and_run(space_name, max_stride):
    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    torch.manual_seed(0)
    x = torch.randn(1, 200, 80)  # 2 s of 100 Hz features
    seen = set()
    for _ in range(500):
        trial = study.ask()
        run = sample_config(trial, space, max_total_stride=max_stride)  # validates (raises otherwise)
        assert run.layers.total_stride <= max_stride
        seen.add(run.layers.hash())
        # built on the meta device and given uninitialised memory: initialising 500 models of up to
        # 40 M parameters would cost minutes, and this test is about shapes, not values
        with torch.device("meta"):
            model = STTModel(run.layers, input_size=80, output_size=29)
        model = model.to_empty(device="cpu").eval()
        with torch.no_grad():
            y, n = model(x)
        assert y.shape == (1, model.output_lengths(torch.tensor(200)).item(), 29) and n.item() == y.size(1)
        study.tell(trial, 0.0)
    assert len(seen) > 450  # the space is not degenerate


def test_parameter_names_are_stable_paths():
    space = load_space("small.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    sample_config(trial, space)
    names = set(trial.params)
    assert {"width", "layers", "layer0.stride", "layer0.branches", "layer0.branch0.type", "train.lr"} <= names
    assert all(n.split(".")[0] in ("width", "layers", "train") or n.startswith("layer") for n in names)


@pytest.mark.parametrize("spec,words", [
    ({"width": [64], "layers": 2, "depth": 3}, "depth: unknown key; valid:"),
    ({"width": [64], "layers": 2, "branch": {"kernal": [3]}}, "branch.kernal: unknown key; valid:"),
    ({"width": [64], "layers": 2, "branch": {"type": ["lstm"]}}, "branch.type: 'lstm' is not a branch block"),
    ({"width": [64], "layers": {"low": 4, "high": 2}}, "layers: low 4 > high 2"),
    ({"layers": 2}, "width: missing"),
    ({"width": [64], "layers": 2, "train": {"epochs": 2, "lr_max": 1}}, "train.lr_max: unknown key"),
])  # fmt: skip
def test_invalid_space_names_the_key(spec, words):
    with pytest.raises(SpaceError, match="my.yaml: " + words.replace(".", r"\.").replace("(", r"\(")):
        validate_space(spec, "my.yaml")


def test_space_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("width: [64]\nlayers: 2\nlayer: {strides: [1, 2]}\n")
    with pytest.raises(SpaceError, match=r"bad\.yaml: layer\.strides: unknown key"):
        load_space(p)
    with pytest.raises(SpaceError, match="no such space file"):
        load_space(tmp_path / "none.yaml")


def test_max_feasible_stride_follows_the_letter_rate():
    frames = [100, 100, 100]  # 1 s each at 100 Hz
    assert max_feasible_stride(frames, [[1, 2] * 10] * 3) == 4  # 20 letters/s: 25 frames/s still aligns
    assert max_feasible_stride(frames, [[1, 2] * 20] * 3) == 2  # 40 letters/s
    assert max_feasible_stride(frames, [[1, 1] * 20] * 3) == 1  # 40 repeats need 79 frames: blanks between them
    assert max_feasible_stride(frames, [[1, 2] * 60] * 3) == 0  # 120 letters/s: nothing aligns, not even stride 1
