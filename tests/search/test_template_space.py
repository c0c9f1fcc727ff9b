"""Template spaces: search around a published model (QuartzNet), every parameter a property of the built model."""

import optuna
import pytest

from search.space import SpaceError, load_seed, load_space, params_of, sample_config, shipped_spaces, space_from_text
from stt.model.measure import measure
from stt.train.run_config import load_run_config

TEMPLATE_SPACES = [n for n in shipped_spaces() if "template" in load_space(n).spec]


def _described(run, template, name):
    """What the built model says about one parameter, read from the config and the template alone."""
    if name.startswith("train."):
        return getattr(run.train, name[len("train.") :])
    blocks = [i for i, layer in enumerate(template.layers.layers) if layer[0][0][1]["residual"]]
    if name == "width_multiplier":
        return run.layers.layers[0][0][0][1]["out_chan"], template.layers.layers[0][0][0][1]["out_chan"]
    b, key = name.split(".")
    i = blocks[int(b[len("block") :])]
    mine, theirs = run.layers.layers[i][0][0][1], template.layers.layers[i][0][0][1]
    if key == "kernel_scale":
        return mine["kernel"], theirs["kernel"]
    if key == "channel_scale":
        return mine["out_chan"], theirs["out_chan"]
    return mine[key]


@pytest.mark.parametrize("space_name", TEMPLATE_SPACES)
def test_every_recorded_parameter_of_a_template_space_describes_the_built_model(space_name):
    assert {"quartznet", "quartznet_cpu"} <= set(TEMPLATE_SPACES)
    space = load_space(space_name)
    template = space.template
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(25):
        trial = study.ask()
        run = sample_config(trial, space, max_total_stride=4)
        study.tell(trial, 0.0)
        # the parameters alone rebuild the config, and the config gives back parameters that rebuild it
        assert sample_config(optuna.trial.FixedTrial(trial.params), space, 4).to_dict() == run.to_dict()
        read = params_of(run, space, 4, "x")
        assert sample_config(optuna.trial.FixedTrial(read), space, 4).to_dict() == run.to_dict()
        wm = trial.params.get("width_multiplier", 1.0)
        # the skeleton stays: layers, strides, dilations, the prologue's and epilogue's form
        assert len(run.layers.layers) == len(template.layers.layers)
        assert run.layers.total_stride == template.layers.total_stride
        for name, value in trial.params.items():
            got = _described(run, template, name)
            if name.endswith("kernel_scale"):
                kernel, k0 = got
                assert kernel % 2 == 1 and abs(kernel - k0 * value) <= 1, (name, got, value)
            elif name.endswith("channel_scale"):
                chans, c0 = got
                assert chans % 8 == 0 and abs(chans - c0 * wm * value) <= 4 + 4 * value, (name, got, value)
            elif name == "width_multiplier":
                chans, c0 = got
                assert abs(chans - c0 * value) <= 4
            else:
                assert got == value and type(got) is type(value), (name, got, value)
            seen.add((name.split(".")[-1], value))
        assert measure(run, 64, 29).params > 0  # it builds
    assert ("separable", False) in seen and ("se", True) in seen  # the new forms were sampled


def test_the_quartznet_space_starts_from_quartznet5x5_itself():
    space = load_space("quartznet")
    params, label = load_seed("quartznet5x5", space, 4)
    run = sample_config(optuna.trial.FixedTrial(params), space, 4)
    assert run.to_dict() == load_run_config("quartznet5x5.yaml").to_dict()  # the seed, untouched
    assert space.spec["frontend"] == "fbank:64" and space.spec["train"]["epochs"] == 100
    half = sample_config(optuna.trial.FixedTrial({**params, "width_multiplier": 0.5}), space, 4)
    assert measure(half, 64, 29).params < measure(run, 64, 29).params / 3  # scaled to a smaller corpus


@pytest.mark.parametrize(
    "text,message",
    [
        ("template: small\n", "template: small: layer 0 is not one jasper_block"),
        ("template: nope\n", "template: nope.yaml: no such file"),
        ("template: quartznet_cpu\nwidth: [8]\n", "width: unknown key in a template space"),
        ("template: quartznet_cpu\nblock: {kernel: [3]}\n", "block.kernel: unknown key; valid: repeat, kernel_scale"),
        ("template: quartznet_cpu\nblock: {repeat: [0, 1]}\n", "block.repeat: 0 is not an integer >= 1"),
        ("template: quartznet_cpu\nblock: {kernel_scale: {low: 0.5, high: 1}}\n", "kernel_scale: expected a list"),
        ("template: quartznet_cpu\nfrontend: fbank\n", "but the template quartznet_cpu is for fbank:64"),
        (
            "template: quartznet_cpu\nblock: {kernel_scale: [0.95, 1.0]}\n",
            "0.95 and 1.0 both give block0 a kernel of 11",
        ),
        ("template: quartznet_cpu\nwidth_multiplier: [1.0, 1.01]\n", "1.0 and 1.01 build the same widths"),
        ("template: quartznet_cpu\nblock: {channel_scale: [1000]}\n", "over 16384"),
        ("template: quartznet_cpu\nseeds: quartznet_cpu\n", "seeds: expected a list of config paths"),
        ("template: quartznet_cpu\nseeds: [small]\n", None),
    ],
)
def test_a_bad_template_space_is_one_line_naming_the_key(text, message):
    if message is None:  # a seed that is not a form of the template is refused when it is read
        space = space_from_text(text, "t.yaml")
        with pytest.raises(SpaceError, match="seed small: not in the space"):
            load_seed("small", space, 4)
        return
    with pytest.raises(SpaceError) as e:
        space_from_text(text, "t.yaml")
    assert message in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("t.yaml: ")


def test_a_template_that_strides_past_the_corpus_cap_is_refused_when_sampled_or_seeded():
    space = load_space("quartznet_cpu")
    with pytest.raises(SpaceError, match="strides by 2, past this corpus's cap of 1"):
        sample_config(optuna.trial.FixedTrial({}), space, max_total_stride=1)
    with pytest.raises(SpaceError, match="strides by 2, past this corpus's cap of 1"):
        load_seed("quartznet_cpu", space, 1)  # at launch, before any trial


def test_a_stored_template_space_builds_from_the_template_it_was_read_with(tmp_path):
    # resume and remote workers read the study's stored text: the template file may have changed since
    template = tmp_path / "mine.yaml"
    template.write_text(load_run_config("quartznet_cpu.yaml").to_yaml())
    (tmp_path / "space.yaml").write_text(f"template: {template}\nblock: {{repeat: [1, 2]}}\n")
    space = load_space(tmp_path / "space.yaml")
    assert "template_config:" in space.text
    template.write_text(template.read_text().replace("out_chan: 128", "out_chan: 96"))  # edited afterwards
    stored = space_from_text(space.text, "space")
    params = {"block0.repeat": 1, **{f"block{i}.repeat": 2 for i in range(1, 5)}}
    run = sample_config(optuna.trial.FixedTrial(params), stored, 4)
    assert run.layers.layers[1][0][0][1]["out_chan"] == 128 and run.layers.layers[1][0][0][1]["repeat"] == 1
    assert space_from_text(stored.text, "space").text == stored.text  # added once


@pytest.mark.slow
def test_a_study_on_the_cpu_quartznet_space_trains_its_seed_and_forms_of_it_and_exports_one(workdir):
    import json

    from search.cli import main as search_main
    from search.results.compare import trials_frame
    from stt.cli import main as stt_main

    storage = f"sqlite:///{workdir}/db.sqlite"
    argv = ["launch", "--space", "quartznet_cpu", "--data", "data", "--storage", storage, "--study", "qn"]
    assert search_main([*argv, "--trials", "3", "--epochs", "1", "--sampler", "random", "--seed", "0"]) == 0
    df = trials_frame("qn", storage)
    assert len(df) >= 3 and df["dev_wer"].notna().all()  # 3 candidates, and any promotion's trial
    seed = load_run_config("quartznet_cpu.yaml")
    stored = optuna.load_study(study_name="qn", storage=storage).trials
    configs = [load_run_config(json.loads(t.user_attrs["config"])) for t in stored]
    assert configs[0].layers == seed.layers  # the template itself first
    assert any(c.layers != seed.layers for c in configs[1:])  # then forms of it
    assert all(c.frontend == "fbank:64" and len(c.layers.layers) == 8 for c in configs)
    assert search_main(["export", "--study", "qn", "--storage", storage, "-o", "best.yaml"]) == 0
    assert stt_main(["train", "--config", "best.yaml", "--data", "data", "--epochs", "1", "--out", "rerun"]) == 0
    assert json.loads((workdir / "rerun" / "result.json").read_text())["epochs"] == 1
