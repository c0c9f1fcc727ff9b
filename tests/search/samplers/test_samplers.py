"""Samplers: workers seeded alike still propose different candidates, and a seeded study replays."""

import json

import optuna
import pytest


@pytest.mark.parametrize("sampler", ["tpe", "random", "evolution", "nsga2"])
def test_workers_seeded_alike_propose_different_candidates_and_a_seeded_study_replays(sampler):
    import hashlib

    from search.samplers import make_sampler
    from search.space import load_space, sample_config

    space = load_space("small.yaml")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def run(workers: int) -> list[str]:
        storage = optuna.storages.InMemoryStorage()
        study = optuna.create_study(storage=storage, sampler=make_sampler(sampler, 0, 3))
        # every worker process builds its own sampler from the study's seed, as `stt-search worker` does
        views = [
            optuna.load_study(study_name=study.study_name, storage=storage, sampler=make_sampler(sampler, 0, 3))
            for _ in range(workers)
        ]
        hashes = []
        for _round in range(12 // workers):
            asked = [(v, v.ask()) for v in views]  # all ask before any tells: they run side by side
            for _view, trial in asked:
                run_cfg = sample_config(trial, space, 4)
                hashes.append(hashlib.sha256(json.dumps(run_cfg.to_dict(), sort_keys=True).encode()).hexdigest())
            for v, trial in asked:
                v.tell(trial, float(int(hashes[-1][:6], 16) % 100) / 100)  # any deterministic value
        return hashes

    parallel = run(3)
    assert len(set(parallel)) == 12, "two workers trained the same candidate"
    assert run(1) == run(1)  # one worker, same seed: the same candidates in the same order
