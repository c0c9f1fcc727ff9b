"""Comparing studies: trials as a pandas frame, the leaderboard, the report."""

import json

import optuna

from search.results.compare import trials_frame


def test_the_leaderboard_reads_a_study_whose_trial_stopped_before_its_config(tmp_path):
    """Found by bench/kill_recovery.py: an orphaned trial has no config beside trials that do (NaN in pandas)."""
    from search.results.compare import leaderboard
    from search.storage import open_storage

    url = f"sqlite:///{tmp_path}/n.db"
    study = optuna.create_study(study_name="n", storage=open_storage(url, create=True))
    study.ask()  # no config
    done = study.ask()
    done.set_user_attr(
        "config",
        json.dumps(
            {
                "model": {"layers": [[[["conv_block", {"in_chan": 8, "out_chan": 8}]]]]},
                "train": {"lr": 0.01, "epochs": 1},
            }
        ),
    )
    done.set_user_attr("dev_wer", 0.5)
    study.tell(done, 0.5)
    df = trials_frame("n", url)
    assert df.loc[df.trial == done.number, "n_layers"].item() == 1
    assert "50.0%" in leaderboard(df)
