"""Search spaces: every shipped space samples configs that validate, build and run; bad spaces are named."""

import re

import optuna
import pytest
import torch
import yaml

from search.space import (
    SpaceError,
    load_seed,
    load_space,
    params_of,
    sample_config,
    shipped_spaces,
    space_from_text,
    validate_space,
)
from stt.model.network import STTModel
from stt.train.run_config import load_run_config

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
    assert {"width", "layers", "layer0.stride", "layer0.branches", "train.lr"} <= names
    assert {"layer0.branch0.type", "layer0.branch0.strided_type"} & names
    assert all(n.split(".")[0] in ("width", "layers", "train") or n.startswith("layer") for n in names)


def _described(run, name: str):
    """What the built model says about one parameter (read from the config, independently of the sampler)."""
    layers = run.layers
    if name in ("width", "layers"):
        return layers.in_width if name == "width" else len(layers.layers)
    if name.startswith("train."):
        return getattr(run.train, name[len("train.") :])
    layer, *rest = name.split(".")
    i = int(layer[len("layer") :])
    blocks = layers.layers[i]
    if rest[0] == "stride" or rest[0].startswith("stride_upto"):
        return layers.layer_stride(i)
    if rest[0] == "branches":
        return len(blocks[0])
    if rest[0] == "single_ff":
        return len(blocks) == 2
    if rest[0] == "d_ff":
        ff = blocks[1][0][1]
        return ff["d_ff"] / ff["input_size"]
    btype, kw = blocks[0][int(rest[0][len("branch") :])]
    if rest[1] in ("type", "strided_type"):
        return btype
    c = "_conv" if btype == "conv_attention_conv_block" else ""
    return {
        "kernel": kw.get("kernel" + c),
        "attn_kernel": kw.get("kernel_attn"),
        "dilation": kw.get("dil" + c),
        "glu": kw.get("k") == 2,
        "heads": kw.get("n_heads"),
        "dropout": kw.get("dropout" + c),
        "repeat": kw.get("repeat"),
        "separable": kw.get("separable"),
        "se": kw.get("se"),
    }[rest[1]]


JASPER_SPACE = """
width: [32, 64]
layers: {low: 2, high: 4}
layer: {stride: [1, 2], branches: {low: 1, high: 2}}
branch:
  type: [conv_block, jasper_block]
  kernel: [3, 5]
  dilation: [1, 2]
  repeat: [1, 2, 3]
  separable: [false, true]
  se: [false, true]
  dropout: {low: 0.0, high: 0.2}
"""


@pytest.mark.parametrize(
    "space_name", [n for n in shipped_spaces() if "template" not in load_space(n).spec] + ["jasper"]
)
def test_every_recorded_parameter_describes_the_built_model(space_name):
    # "jasper": the Jasper/QuartzNet block as a branch of a layered space, with its own knobs
    space = space_from_text(JASPER_SPACE, "jasper.yaml") if space_name == "jasper" else load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    narrowed = set()
    for cap in (4, 2, 1):  # the corpus's stride cap narrows the choices; nothing is overridden after sampling
        for _ in range(60):
            trial = study.ask()
            run = sample_config(trial, space, max_total_stride=cap)
            study.tell(trial, 0.0)
            # rebuilding from trial.params alone gives the stored config, and needs every parameter
            fixed = optuna.trial.FixedTrial(trial.params)
            assert sample_config(fixed, space, max_total_stride=cap).to_dict() == run.to_dict()
            assert fixed.params == trial.params
            assert params_of(run, space, cap, "x") == trial.params  # and the config gives back the parameters
            for name, value in trial.params.items():
                got = _described(run, name)
                if name.endswith(".d_ff"):
                    assert got == pytest.approx(value, abs=1e-3), name
                else:
                    assert got == value and type(got) is type(value), (name, got, value)
                if name.endswith("strided_type"):
                    assert run.layers.layer_stride(int(name.split(".")[0][len("layer") :])) > 1
                narrowed |= {n.split(".")[-1] for n in trial.params if "upto" in n or "strided" in n}
            assert run.layers.total_stride <= cap
    from stt.model.blocks import BLOCKS

    if not all(BLOCKS[t].Config.can_stride for t in space.spec["branch"]["type"]):
        assert "strided_type" in narrowed  # the conditional names were exercised


def test_the_shipped_seeds_are_points_of_their_spaces():
    for space_name, seed in (("small", "small"), ("seed", "seed_base")):
        space = load_space(space_name)
        assert space.spec["seeds"] == [seed]
        params, label = load_seed(seed, space, 4)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.enqueue_trial(params)  # what create_study does; train keys the seed does not state are sampled
        run = sample_config(study.ask(), space, 4)
        assert run.layers.to_list() == load_run_config(f"{seed}.yaml").layers.to_list()
    # the default config states its learning rate and batch: the seed trains with them
    params, _ = load_seed("small", load_space("small"), 4)
    assert (params["train.lr"], params["train.batch_frames"]) == (0.003, 16000)


def test_a_seed_outside_the_space_names_what_does_not_fit(tmp_path):
    narrow = load_space("small")
    narrow.spec["width"] = [96, 128]
    with pytest.raises(SpaceError, match=r"^seed small: not in the space: width is 192, the space allows \[96, 128\]$"):
        load_seed("small", narrow, 4)
    cfg = load_run_config("small.yaml").to_dict()
    cfg["model"]["layers"][1][1][0][1]["dropout"] = 0.3  # a feed-forward dropout of its own: not a pattern of the space
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(
        SpaceError, match=r"^seed .*mine\.yaml: not in the space: layers\[1\] is .*the nearest the space"
    ):
        load_seed(str(p), load_space("small"), 4)
    with pytest.raises(SpaceError, match=r"^seed nosuch: .*no such file"):
        load_seed("nosuch", narrow, 4)


@pytest.mark.parametrize(
    "spec,words",
    [
        ({"width": [64], "layers": 2, "depth": 3}, "depth: unknown key; valid:"),
        ({"width": [64], "layers": 2, "branch": {"kernal": [3]}}, "branch.kernal: unknown key; valid:"),
        ({"width": [64], "layers": 2, "branch": {"type": ["lstm"]}}, "branch.type: 'lstm' is not a branch block"),
        ({"width": [64], "layers": {"low": 4, "high": 2}}, "layers: low 4 > high 2"),
        ({"layers": 2}, "width: missing"),
        ({"width": [64], "layers": 2, "train": {"epochs": 2, "lr_max": 1}}, "train.lr_max: unknown key"),
        (
            {"width": [64], "layers": 2, "layer": {"stride": [1, 1, 2]}},
            "layer.stride: [1, 1, 2] repeats 1; list each choice once",
        ),
        ({"width": [64], "layers": 2, "branch": {"kernel": [3, 4]}}, "branch.kernel: 4 is even"),
        ({"width": [64, 96], "layers": 2, "branch": {"heads": [4, 64]}}, "branch.heads: 64 does not divide width 96"),
        ({"width": [64], "layers": 2, "layer": {"stride": [2]}}, "layer.stride: [2] lacks 1"),
        (
            {"width": [64], "layers": 2, "layer": {"stride": [1, 2]}, "branch": {"type": ["attention_conv_block"]}},
            "layer.stride: [1, 2] strides, but no branch.type can",
        ),
        (
            {"width": [64], "layers": 2, "branch": {"kernel": {"low": 3, "high": 7}}},
            "branch.kernel: expected a list of choices",
        ),
        ({"width": [64], "layers": 2, "seeds": "small"}, "seeds: expected a list of config paths"),
    ],
)
def test_invalid_space_names_the_key(spec, words):
    with pytest.raises(SpaceError, match=re.escape("my.yaml: " + words)):
        validate_space(spec, "my.yaml")


def test_space_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("width: [64]\nlayers: 2\nlayer: {strides: [1, 2]}\n")
    with pytest.raises(SpaceError, match=r"bad\.yaml: layer\.strides: unknown key"):
        load_space(p)
    with pytest.raises(SpaceError, match="no such space file"):
        load_space(tmp_path / "none.yaml")
