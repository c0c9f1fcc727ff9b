"""The study's samplers, by name, and the per-trial seeding that keeps parallel workers apart.

Every worker builds its sampler from the study's settings (``search.settings.StudySettings``): ``tpe``
(Optuna's TPE, multivariate and grouped over the conditional space, with a constant liar for parallel
workers), ``random``, ``evolution`` (regularised evolution, :mod:`search.samplers.evolution`), or ``nsga2`` (for
``--objectives wer,params``).
"""

from __future__ import annotations

import numpy as np
import optuna

from search.samplers.evolution import EvolutionSampler
from search.storage import stable_enough


def _tpe(seed: int | None, n_startup: int) -> optuna.samplers.BaseSampler:
    # multivariate + group: the space is conditional (branches exist only for some layer counts);
    # constant_liar: parallel workers do not all sample next to the same running trial
    with stable_enough():
        return optuna.samplers.TPESampler(
            multivariate=True, group=True, seed=seed, n_startup_trials=n_startup, constant_liar=True
        )


SAMPLERS = {
    "tpe": _tpe,
    "random": lambda seed, n_startup: optuna.samplers.RandomSampler(seed=seed),
    "evolution": lambda seed, n_startup: EvolutionSampler(n_startup=n_startup, seed=seed),
    "nsga2": lambda seed, n_startup: optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, n_startup)),
}
SINGLE_OBJECTIVE = ("evolution",)  # samplers that rank candidates by one value


def default_startup_trials(trials: int) -> int:
    """Random trials before TPE models the space: a third of the target, 3 to 10."""
    return min(10, max(3, trials // 3))


def make_sampler(name: str, seed: int | None, n_startup: int) -> optuna.samplers.BaseSampler:
    """The named sampler (one of :data:`SAMPLERS`); with a seed, re-seeded per trial (:class:`PerTrialSeeding`)."""
    base = SAMPLERS[name](seed, n_startup)
    return base if seed is None else PerTrialSeeding(base, seed)


class PerTrialSeeding(optuna.samplers.BaseSampler):
    """A sampler whose random streams are re-seeded from (study seed, trial number) before every trial.

    Every worker builds its sampler from the study's seed. Seeded once per process, workers would all
    draw the same stream and train the same candidates side by side, and a resumed study would repeat
    trial 0. Trial numbers are unique across workers (the storage hands them out), so each trial gets a
    stream of its own, and a seeded study run one trial at a time is reproducible.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, seed: int):
        self.base, self.seed = base, seed

    def __str__(self) -> str:
        return f"{type(self.base).__name__}(seeded per trial from {self.seed})"

    def before_trial(self, study, trial) -> None:
        seed = int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0])
        _seed_streams(self.base, seed)
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def _seed_streams(sampler, seed: int) -> None:
    """Seed every numpy stream a sampler (and the samplers inside it) draws from."""
    from optuna.samplers._lazy_random_state import LazyRandomState

    for value in vars(sampler).values():
        if isinstance(value, LazyRandomState):
            value.rng.seed(seed)
        elif isinstance(value, optuna.samplers.BaseSampler):
            _seed_streams(value, seed)
