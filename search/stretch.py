"""The budget's end goes to the best: a study with a time budget stops searching before its end, grows the best
candidate trained in full by a network morphism, and trains the grown model on from its weights until the end.

A researcher with a deadline wants the best model at the deadline. The candidates a search trains to their
full fidelity are still improving when their schedule ends (the default config: 20.0 % dev WER after its 20
epochs, 12.7 % after 50), so the last ``--stretch`` share of the budget (``FidelityPlan.stretch_end`` after
``FidelityPlan.deadline``) trains one of them on. It is grown first, by a morphism that keeps its function
(``stt.model.morph``): the child starts where the parent ended, with more capacity for the epochs it gets.
The child is a candidate of its own (user attribute ``growth``: parent, morphisms, epochs, learning rate); its
stored config is what ``stt train`` trains from scratch for the same architecture and total epochs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import optuna
from optuna.trial import TrialState

from search.fidelity import FidelityPlan
from search.trials import Attr
from stt.model.measure import measure
from stt.model.morph import Deepen, grown
from stt.train.run_config import load_run_config

log = logging.getLogger("search")
STRETCHED = "stretched"  # the study user attribute naming the candidate the stretch grew (one stretch a study)
LR_FACTOR = 0.5  # the grown model's peak learning rate, as a share of its parent's: a warm restart, not a start
MARGIN = 0.9  # the share of the time left that the stretch's epochs are planned to fill (evaluations, start-up)


class Stretch:
    """An Optuna callback: once the search's deadline has passed, no new candidate starts, and the best candidate
    trained in full is grown and queued to train on until the study's end (see the module docstring)."""

    def __init__(self, plan: FidelityPlan, feature_size: int, vocab_size: int, max_epochs: int | None = None):
        self.plan, self.feature_size, self.vocab_size = plan, feature_size, vocab_size
        self.max_epochs = max_epochs  # at most this many epochs of growth (None: as many as the time allows)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.plan.stretch_end is None or time.time() < self.plan.deadline:
            return
        study.stop()  # no new candidate now: what waits (the stretch) runs next, then the study ends
        self.queue(study)

    def queue(self, study: optuna.Study) -> dict | None:
        """Queue the stretch, once a study; returns its ``growth``, or None (queued already, or nothing to grow)."""
        if STRETCHED in study.user_attrs:
            return None
        growth = self.growth(study.get_trials(deepcopy=False))
        if growth is None:
            return None
        study.set_user_attr(STRETCHED, growth["parent"])
        study.enqueue_trial({}, user_attrs={Attr.GROWTH: growth})
        log.info(
            "stretch: trial %d (dev WER %.1f%%)%s trains on from its weights for %d epochs until the end",
            growth["parent"],
            100 * growth["parent_dev_wer"],
            f" grown by {', '.join(m['op'] for m in growth['morphs'])}," if growth["morphs"] else "",
            growth["epochs"],
        )
        return growth

    def growth(self, trials: list[optuna.trial.FrozenTrial]) -> dict | None:
        """The stretch to queue: the best candidate trained in full, grown, for the epochs the time left allows."""
        full = [
            t
            for t in trials
            if t.state == TrialState.COMPLETE
            and Attr.GROWTH not in t.user_attrs
            and t.user_attrs.get(Attr.DEV_WER) is not None
            and (t.user_attrs.get(Attr.EPOCHS) or 0) >= self.plan.epochs
        ]
        if not full:
            return None  # nothing trained in full to grow: the study ends with what it has
        best = min(full, key=lambda t: (t.user_attrs[Attr.DEV_WER], t.number))
        run = load_run_config(json.loads(best.user_attrs[Attr.CONFIG]))
        # a layer of capacity, before the output; a model without model-level residuals (the Jasper family, whose
        # blocks carry their own) has no identity layer to insert, so it trains on unchanged
        morphs = [Deepen(after=len(run.layers.layers) - 1, kernel=5)] if run.residual else []
        child = grown(run.layers, morphs)
        # the child's pace: its parent's seconds per epoch, scaled by the compute the growth adds
        grown_run = dataclasses.replace(run, layers=child)
        gflops = measure(grown_run, self.feature_size, self.vocab_size).gflops_per_second
        scale = gflops / max(best.user_attrs[Attr.GFLOPS], 1e-9)
        per_epoch = best.user_attrs[Attr.WALL_SECONDS] / best.user_attrs[Attr.EPOCHS] * scale
        epochs = int(MARGIN * (self.plan.end - time.time()) / per_epoch)
        epochs = min(epochs, self.max_epochs or epochs)
        if epochs < 1:
            return None
        return {
            "parent": best.number,
            "parent_dev_wer": best.user_attrs[Attr.DEV_WER],
            "morphs": [m.to_dict() for m in morphs],
            "epochs": epochs,
            "lr": LR_FACTOR * run.train.lr,
            "warmup": 0.1,
        }
