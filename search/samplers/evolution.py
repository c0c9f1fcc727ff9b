"""Regularised evolution (Real et al. 2019, "Regularized Evolution for Image Classifier Architecture Search").

    --sampler evolution

Each new candidate is a copy of a tournament winner with one decision changed:

* the **population** is the last ``population_size`` candidates that trained at least one step, in trial
  order: a candidate ages out when newer ones arrive, however good it was (the "regularised" part: a lucky
  early score cannot anchor the search for ever);
* the **tournament** draws ``sample_size`` of them at random; the winner is the one that got furthest in the
  fidelity plan (ASHA promoted it further), then the lowest dev signal at that step. Candidates paused at
  different rungs are never ranked on values from different epochs;
* the **child** asks the same questions as its parent and gets the parent's answers, except one: a parameter
  of the parent's chosen at random is drawn afresh (different from the parent's value where the distribution
  allows). The space is define-by-run, so a mutation of a structural choice (say, the layer count) brings
  questions the parent never asked; those are drawn at random too.

Until the population holds ``n_startup`` candidates, candidates are drawn at random. The chosen parent is
recorded on the trial (user attribute ``parent``), so a study's lineage can be read back.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import FrozenTrial, TrialState

from search.trials import Attr, candidate_of

PARENT = "parent"  # the user attribute naming a child's parent candidate (trial number)


class EvolutionSampler(optuna.samplers.BaseSampler):
    """Regularised evolution over a define-by-run space.

    Args:
        population_size: how many of the most recent candidates breed (P in the paper).
        sample_size: candidates drawn per tournament (S); 1 is random search over the population,
            P is always the population's best.
        n_startup: random candidates before the first tournament.
        seed: the random stream's seed.
    """

    def __init__(self, population_size: int = 12, sample_size: int = 3, n_startup: int = 4, seed: int | None = None):
        if population_size < 1 or not 1 <= sample_size <= population_size:
            raise ValueError(f"need 1 <= sample_size ({sample_size}) <= population_size ({population_size})")
        if n_startup < 1:
            raise ValueError(f"n_startup must be at least 1, got {n_startup}")
        self.population_size, self.sample_size, self.n_startup = population_size, sample_size, n_startup
        self._rng = LazyRandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._plans: dict[int, tuple[FrozenTrial, str]] = {}  # trial id -> (parent, the parameter to mutate)

    def __str__(self) -> str:
        return f"EvolutionSampler(population {self.population_size}, tournament {self.sample_size})"

    def reseed_rng(self) -> None:
        self._rng.rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}  # define-by-run: every parameter goes through sample_independent

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._raise_error_if_multi_objective(study)
        self._plans.pop(trial._trial_id, None)
        population = self.population(study)
        if len(population) < self.n_startup:
            return
        rng = self._rng.rng
        size = min(self.sample_size, len(population))  # a young population: all of it
        drawn = [population[i] for i in rng.choice(len(population), size=size, replace=False)]
        parent = min(drawn, key=lambda c: c[0])[1]
        names = sorted(parent.params)
        if not names:
            return
        self._plans[trial._trial_id] = (parent, names[rng.randint(len(names))])
        study._storage.set_trial_user_attr(trial._trial_id, PARENT, candidate_of(parent))

    def population(self, study: optuna.Study) -> list[tuple[tuple[float, float], FrozenTrial]]:
        """The last ``population_size`` candidates with a dev signal: ``((-furthest step, value there), trial)``.

        A candidate's trials (re-queued copies, promotions) pool their intermediate values; the trial
        carrying its parameters is its first. Grown candidates (the stretch) are not points of the space and
        do not breed.
        """
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        curves: dict[int, dict[int, float]] = {}
        first: dict[int, FrozenTrial] = {}
        for t in sorted(trials, key=lambda t: t.number):
            if Attr.GROWTH in t.user_attrs:
                continue
            c = candidate_of(t)
            if t.params and c not in first:
                first[c] = t
            for step, v in t.intermediate_values.items():
                if v is not None and math.isfinite(v):
                    curve = curves.setdefault(c, {})
                    curve[step] = min(v, curve.get(step, math.inf))
        members = []
        for c in sorted(first):
            if c in curves:
                step = max(curves[c])
                members.append(((-float(step), curves[c][step]), first[c]))
        return members[-self.population_size :]

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        plan = self._plans.get(trial._trial_id)
        if plan is None:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        parent, mutate = plan
        inherited = _inherit(parent, param_name, param_distribution)
        if param_name != mutate and inherited is not None:
            return inherited[0]
        value = self._random.sample_independent(study, trial, param_name, param_distribution)
        for _ in range(16):  # a mutation changes something, where the distribution has another value
            if inherited is None or value != inherited[0]:
                break
            value = self._random.sample_independent(study, trial, param_name, param_distribution)
        return value

    def after_trial(self, study, trial, state, values) -> None:
        self._plans.pop(trial._trial_id, None)


def _inherit(parent: FrozenTrial, name: str, dist: BaseDistribution) -> tuple[Any] | None:
    """The parent's value for ``name`` as a 1-tuple, or None when it never asked or the value is out of ``dist``."""
    if name not in parent.params:
        return None
    value = parent.params[name]
    try:
        return (value,) if dist._contains(dist.to_internal_repr(value)) else None
    except (ValueError, TypeError):
        return None
