"""Beam rescoring of a study's best trials."""

import optuna
import pytest

from search.cli import main as search_main
from search.results.compare import trials_frame
from tests.search.conftest import launch_argv


@pytest.mark.slow
def test_rescore_top_three_stores_beam_wer_beside_greedy_and_compare_shows_both(workdir, capsys):
    storage = f"sqlite:///{workdir}/db.sqlite"
    argv = launch_argv("rs", storage, 4, "--sampler", "random", "--pruner", "none", "--seed", "3", "--rescore-top", "3")
    assert search_main(argv) == 0
    assert (workdir / "data" / "lm" / "lm.arpa").exists() and (workdir / "data" / "lm" / "lexicon.txt").exists()
    study = optuna.load_study(study_name="rs", storage=storage)
    done = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.values[0])
    beam = {int(k.split("_")[1]): v for k, v in study.user_attrs.items() if k.startswith("rescored_")}
    assert sorted(beam) == sorted(t.number for t in done[:3])  # the three best by greedy dev WER, and only they
    for scores in beam.values():
        assert scores["dev_wer_beam"] >= 0 and scores["test_wer_beam"] >= 0 and "lexicon of" in scores["decoder"]
    df = trials_frame("rs", storage)
    assert (
        df["dev_wer_beam"].notna().sum() == 3 and df.loc[df["trial"] == done[0].number, "test_wer_beam"].notna().all()
    )
    capsys.readouterr()
    assert search_main(["compare", "rs", "--storage", storage, "--out", str(workdir / "report")]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert "dev_wer" in header and "dev_wer_beam" in header and "test_wer_beam" in header
    # resuming rescores nothing twice: what is stored stays
    before = dict(study.user_attrs)
    assert search_main(["resume", "--study", "rs", "--storage", storage]) == 0
    assert {
        k: v
        for k, v in optuna.load_study(study_name="rs", storage=storage).user_attrs.items()
        if k.startswith("rescored_")
    } == {k: v for k, v in before.items() if k.startswith("rescored_")}
