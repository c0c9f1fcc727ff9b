"""The study's pruners, by name: what decides, epoch by epoch, whether a candidate trains on.

``asha`` (the default, :mod:`search.pruners.asha`): asynchronous successive halving with pause and promote.
``median``, ``hyperband`` and ``none`` are Optuna's own. Every trial reports one dev signal per step
(:data:`SIGNALS`); see ``docs/search.md`` for the rules and the measurements behind them.
"""

from __future__ import annotations

import optuna

from search.pruners.asha import UNITS, AshaPruner

SIGNALS = ("loss", "cer", "wer")  # what a trial reports per epoch: dev CTC loss per letter, CER or WER


def _median(epochs: int) -> optuna.pruners.BasePruner:
    # CTC models sit at ~100% WER (all blank) for their first epochs whatever their worth, so a comparison
    # there is noise: no pruning in the first third of the schedule (Optuna's earliest step is n_warmup_steps)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=epochs // 3 + 1)


PRUNERS = {
    "asha": lambda epochs, target, probe, seeds_in_full, deadline: AshaPruner(
        epochs, target=target, units=UNITS if probe else 1, deadline=deadline, seeds_in_full=seeds_in_full
    ),
    "median": lambda epochs, target, probe, seeds_in_full, deadline: _median(epochs),
    "hyperband": lambda epochs, target, probe, seeds_in_full, deadline: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=max(2, epochs), reduction_factor=3
    ),
    "none": lambda epochs, target, probe, seeds_in_full, deadline: optuna.pruners.NopPruner(),
}


def make_pruner(
    name: str,
    epochs: int,
    target: int | None = None,
    probe: bool = True,
    seeds_in_full: bool = True,
    deadline: float | None = None,
) -> optuna.pruners.BasePruner:
    """The named pruner (one of :data:`PRUNERS`) for a full fidelity of ``epochs`` and a target of candidates.

    Args:
        probe: ASHA counts fidelity in thirds of an epoch, its lowest rung a probe after 1/3 of epoch 1.
        seeds_in_full: ASHA never pauses a seed config.
        deadline: ``time.time()`` when the study's budget ends (ASHA plans its last promotions by it).
    """
    return PRUNERS[name](epochs, target, probe, seeds_in_full, deadline)
