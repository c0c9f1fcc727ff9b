"""The study's pruners, by name: what decides, epoch by epoch, whether a candidate trains on.

``asha`` (the default, :mod:`search.pruners.asha`): asynchronous successive halving with pause and promote.
``median``, ``hyperband`` and ``none`` are Optuna's own. Every pruner gets the study's fidelity plan
(:class:`search.fidelity.FidelityPlan`); every trial reports one dev signal per step (:data:`SIGNALS`). The
rules and the measurements behind them: ``docs/search.md``.
"""

from __future__ import annotations

import optuna

from search.fidelity import FidelityPlan
from search.pruners.asha import AshaPruner

SIGNALS = ("loss", "cer", "wer")  # what a trial reports per epoch: dev CTC loss per letter, CER or WER


def _median(plan: FidelityPlan) -> optuna.pruners.BasePruner:
    # CTC models sit at ~100% WER (all blank) for their first epochs whatever their worth, so a comparison
    # there is noise: no pruning in the first third of the schedule (Optuna's earliest step is n_warmup_steps)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=plan.step(plan.epochs // 3 + 1))


PRUNERS = {
    "asha": lambda plan, target, seeds_in_full: AshaPruner(plan, target=target, seeds_in_full=seeds_in_full),
    "median": lambda plan, target, seeds_in_full: _median(plan),
    "hyperband": lambda plan, target, seeds_in_full: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=max(2, plan.full), reduction_factor=plan.eta
    ),
    "none": lambda plan, target, seeds_in_full: optuna.pruners.NopPruner(),
}
PROBING = ("asha",)  # the pruners whose lowest rung may be a probe after 1/3 of epoch 1


def make_pruner(
    name: str, plan: FidelityPlan, target: int | None = None, seeds_in_full: bool = True
) -> optuna.pruners.BasePruner:
    """The named pruner (one of :data:`PRUNERS`) for a fidelity plan and a target of candidates.

    Args:
        seeds_in_full: ASHA never pauses a seed config.
    """
    return PRUNERS[name](plan, target, seeds_in_full)
