"""The search options, declared once: the parser is generated from the declarations, and Python callers and the
command line are held to the same rules with the same words."""

import dataclasses

import pytest

from search.cli.parser import build_parser
from search.settings import LAUNCH, StudySettings, WorkerOptions, options_from, settings_from_space
from stt.core.errors import StudyError


def _flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return {s for a in sub._actions for s in a.option_strings}


@pytest.mark.parametrize("command", ["launch", "resume", "worker", "export", "compare", "demo"])
def test_every_declared_flag_of_a_command_is_in_its_parser_with_help(command):
    declared = {
        f.metadata["flag"]
        for cls in (StudySettings, WorkerOptions)
        for f in dataclasses.fields(cls)
        if f.metadata["flag"] and command in f.metadata["commands"]
    }
    assert declared and declared <= _flags(command)
    for cls in (StudySettings, WorkerOptions):
        assert all(f.metadata["help"] for f in dataclasses.fields(cls)), cls


def test_a_parsed_launch_is_the_settings_python_would_make():
    argv = ["launch", "--space", "small", "--data", "d", "--study", "s", "--trials", "7", "--sampler", "random"]
    argv += ["--no-probe", "--objectives", "wer,params", "--max-params", "2e6", "--seed", "3", "--workers", "2"]
    args = build_parser().parse_args(argv)
    from search.space import load_space

    space = load_space("small")
    parsed = options_from(args, StudySettings, space_text=space.text, space_name=space.name)
    made = settings_from_space(
        "small", "d", 7, sampler="random", probe=False, objectives=("wer", "params"), max_params=2e6, seed=3
    )
    assert parsed == made and parsed.multi_objective
    assert options_from(args, WorkerOptions) == WorkerOptions(workers=2)


@pytest.mark.parametrize(
    "option,value,flag_value,message",
    [
        ("trials", 0, "0", "--trials 0: expected an integer >= 1"),
        ("heartbeat", -5, "-5", "--heartbeat -5: expected an integer >= 1"),
        ("max_params", 0.0, "0", "--max-params 0.0: expected a number > 0"),
        ("objectives", ("params", "wer"), "params,wer", "--objectives params,wer: expected a comma-separated"),
        ("sampler", "grid", "grid", "--sampler 'grid': valid: tpe, random, evolution, nsga2"),
    ],
)
def test_a_bad_option_is_one_line_naming_its_flag_from_python_and_from_the_command_line(
    option, value, flag_value, message, capsys
):
    good = dataclasses.asdict(settings_from_space("small", "d", 5))
    with pytest.raises(StudyError, match=f"^{message}"):
        StudySettings(**{**good, option: value})
    flag = message.split()[0]
    with pytest.raises(SystemExit):
        build_parser().parse_args([LAUNCH, "--space", "small", "--data", "d", "--study", "s", flag, flag_value])
    err = capsys.readouterr().err
    assert err.startswith(f"stt-search launch: error: argument {flag}") and err[-1] == "\n" and err.count("\n") == 1


def test_a_sampler_that_ranks_by_one_value_is_refused_for_a_pareto_front():
    with pytest.raises(StudyError, match=r"^--sampler evolution ranks by one value; with --objectives wer,params use"):
        settings_from_space("small", "d", 5, sampler="evolution", objectives=("wer", "params"))


def test_a_lexicon_needs_its_lm():
    with pytest.raises(StudyError, match=r"--lexicon needs --lm"):
        settings_from_space("small", "d", 5, lexicon="words.txt")


def test_stored_settings_read_back_equal_and_older_studies_keep_their_rules():
    s = settings_from_space("small", "d", 5, objectives=("wer", "gflops"), rescore_top=2)
    assert StudySettings.from_attrs(s.to_attrs()) == s
    old = {k: v for k, v in s.to_attrs().items() if k not in ("probe", "seeds_in_full")}
    assert StudySettings.from_attrs(old).probe is True  # counted in thirds of an epoch
    assert StudySettings.from_attrs(old).seeds_in_full is False  # paused seeds like any candidate


def test_a_space_that_searches_its_epochs_is_refused_under_a_pruner_that_ranks_by_epoch(tmp_path, capsys):
    """Rungs compare candidates at the epochs of one full fidelity: a searched train.epochs has none."""
    from search.cli import main as search_main
    from search.space import load_space

    text = load_space("small").text.replace("  epochs: 20\n", "  epochs: [4, 8]\n")
    (tmp_path / "epochs.yaml").write_text(text)
    space = load_space(str(tmp_path / "epochs.yaml"))
    for pruner in ("asha", "median", "hyperband"):
        with pytest.raises(StudyError, match=rf"^epochs: train\.epochs: \[4, 8\] is searched, but --pruner {pruner} "):
            settings_from_space(str(tmp_path / "epochs.yaml"), "d", 5, pruner=pruner).fidelity(space)
    argv = ["launch", "--space", str(tmp_path / "epochs.yaml"), "--data", "d", "--study", "s"]
    assert search_main([*argv, "--storage", f"sqlite:///{tmp_path}/db.sqlite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.epochs: [4, 8] is searched, but --pruner asha" in err
    assert not (tmp_path / "db.sqlite").exists()  # refused before anything was created
    # fixed by --epochs, or each candidate trains its own epochs when nothing ranks them by epoch
    assert settings_from_space(str(tmp_path / "epochs.yaml"), "d", 5, epochs=6).fidelity(space).epochs == 6
    assert settings_from_space(str(tmp_path / "epochs.yaml"), "d", 5, pruner="none").fidelity(space).epochs == 8
