"""The budget's end goes to the best: past the search's deadline the best candidate trained in full is grown by a
morphism and trains on from its weights, as a candidate of its own."""

import json
import time

import optuna
import pytest
import torch

from search.fidelity import FidelityPlan
from search.objective import Objective
from search.settings import settings_from_space
from search.space import load_space
from search.stretch import STRETCHED, Stretch
from search.study import create_study, run_key
from stt.data.training_data import open_training_data
from stt.train.run import load_run


@pytest.mark.slow
def test_the_best_candidate_is_grown_and_trains_on_from_its_weights(workdir):
    storage = f"sqlite:///{workdir}/db.sqlite"
    s = settings_from_space("space.yaml", "data", 3, sampler="random", pruner="none", seed=0)
    study = create_study("st", s, storage)
    corpus = open_training_data(workdir / "data", progress=False)
    objective = Objective(space=load_space("space.yaml"), corpus=corpus, runs_dir=s.runs_dir, run_key=run_key(study))
    study.optimize(objective, n_trials=2, catch=(Exception,))  # two candidates trained in full (2 epochs)
    best = min(study.trials, key=lambda t: (t.user_attrs["dev_wer"], t.number))
    # the search's deadline has passed; the study ends in two minutes
    objective.plan = FidelityPlan(2, deadline=time.time() - 1, stretch_end=time.time() + 120)
    stretch = Stretch(objective.plan, corpus.feature_size, len(corpus.tokenizer), max_epochs=3)
    assert stretch.queue(study)["parent"] == best.number  # what the callback does after a trial past the deadline
    assert study.user_attrs[STRETCHED] == best.number
    study.optimize(objective, n_trials=1, callbacks=[stretch])  # the waiting growth trial
    child = study.trials[-1]
    growth = child.user_attrs["growth"]
    assert child.state == optuna.trial.TrialState.COMPLETE and growth["parent"] == best.number
    assert growth["epochs"] == 3 and growth["morphs"][0]["op"] == "deepen" and child.user_attrs["epochs"] == 3
    # stored: what `stt train` would train from scratch, the grown architecture for the parent's epochs and its own
    parent_cfg, child_cfg = (json.loads(t.user_attrs["config"]) for t in (best, child))
    assert len(child_cfg["model"]["layers"]) == len(parent_cfg["model"]["layers"]) + 1
    assert child_cfg["train"]["epochs"] == 2 + 3 and child_cfg["train"]["lr"] == parent_cfg["train"]["lr"]
    # it started where its parent ended: its first epoch's dev loss is near the parent's last, far below a fresh start
    parent_loss = best.user_attrs["history"]["dev_loss"]
    assert child.user_attrs["history"]["dev_loss"][0] < parent_loss[0]
    assert child.user_attrs["history"]["dev_loss"][0] < 1.5 * parent_loss[-1]
    grown = load_run(workdir / "results" / "runs" / child.user_attrs["run_dir"])
    assert sum(p.numel() for p in grown.model.parameters()) > best.user_attrs["params"]
    assert grown.run.train.schedule == "cosine" and grown.run.train.epochs == 3
    assert stretch.queue(study) is None and len(study.trials) == 3  # one stretch a study
    # export gives the grown candidate's config, which stt train trains from scratch, and its tuned weights
    from search.cli import main as search_main
    from stt.cli import main as stt_main

    argv = ["export", "--study", "st", "--storage", storage, "--trial", str(child.number), "-o", "grown.yaml"]
    assert search_main([*argv, "--weights"]) == 0
    assert stt_main(["train", "--config", "grown.yaml", "--data", "data", "--epochs", "1", "--out", "scratch"]) == 0
    retrained = load_run(workdir / "scratch")
    assert retrained.model.config == grown.model.config and retrained.run.train.schedule == "onecycle"
    assert torch.load(workdir / "grown.pt", weights_only=True)["model"].keys() == grown.model.state_dict().keys()


def test_a_model_without_model_level_residuals_is_continued_unchanged_by_the_stretch():
    # the Jasper family's blocks carry their own residuals: deepen has no identity layer to insert there
    from search.trials import Attr
    from stt.train.run_config import load_run_config

    run = load_run_config("quartznet_cpu.yaml")
    trained = optuna.trial.create_trial(
        value=0.3,
        user_attrs={
            Attr.DEV_WER: 0.3,
            Attr.EPOCHS: 30,
            Attr.CONFIG: json.dumps(run.to_dict()),
            Attr.GFLOPS: 0.033,
            Attr.WALL_SECONDS: 300.0,
        },
    )
    plan = FidelityPlan(30, deadline=time.time() - 1, stretch_end=time.time() + 600)
    growth = Stretch(plan, 64, 29).growth([trained])
    assert (
        growth["morphs"] == [] and growth["parent"] == trained.number and 45 <= growth["epochs"] <= 56
    )  # 0.9 * 600 s at ~10 s an epoch
