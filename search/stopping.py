"""When a worker stops asking for trials: its study's target is met, or the candidates keep failing.

:class:`StopRules` is an Optuna callback, called after every trial of this worker. It reads the trial list
once and stops the study (``study.stop()``) when:

* the target is met, counting running and waiting trials too (asking for another would overshoot it);
* the last :data:`STUCK_AFTER` counted candidates could not be trained (over budget or infeasible: they cost
  nothing, so a space that yields only those would spin through its target);
* the last :data:`FAILED_AFTER` counted candidates failed (at build or in training: a bug or a broken file).

The last two are errors: :meth:`StopRules.error` says which, in one line, after ``optimize`` returns.
"""

from __future__ import annotations

import optuna

from search.trials import COUNTED_FAILURES, UNTRAINABLE, Attr, counts, in_play, status_of
from stt.core.errors import StudyError

STUCK_AFTER = 20  # consecutive untrainable candidates (over budget, infeasible) after which a study gives up
FAILED_AFTER = 5  # consecutive candidates that failed (at build or in training) after which a study gives up


class StopRules:
    """Stops a worker's ``optimize`` at the target, or when candidates keep failing (see the module docstring)."""

    def __init__(self, name: str, target: int, space_name: str):
        self.name, self.target, self.space_name = name, target, space_name
        self.stuck: str | None = None  # the last untrainable candidate's reason, once the rule fired
        self.failing: str | None = None  # the last failed candidate's reason, once the rule fired

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        if sum(1 for t in trials if in_play(t)) >= self.target:
            study.stop()
        done = [t for t in trials if counts(t)]
        if self._run_of(done, STUCK_AFTER, UNTRAINABLE):
            self.stuck = done[-1].user_attrs.get(Attr.REASON, "")
            study.stop()
        if self._run_of(done, FAILED_AFTER, COUNTED_FAILURES):
            self.failing = done[-1].user_attrs.get(Attr.REASON, "")
            study.stop()

    @staticmethod
    def _run_of(done: list, n: int, statuses: tuple) -> bool:
        tail = done[-n:]
        return len(tail) == n and all(status_of(t) in statuses for t in tail)

    @property
    def fired(self) -> bool:
        """Whether an error rule stopped the study (the target rule is not an error)."""
        return self.stuck is not None or self.failing is not None

    def error(self) -> StudyError | None:
        """The one-line error of the rule that stopped the study, if one did."""
        if self.failing is not None:
            return StudyError(
                f"study '{self.name}': the last {FAILED_AFTER} candidates failed (last: {self.failing}); "
                f"see the trials' 'reason' with `stt-search compare {self.name}`"
            )
        if self.stuck is not None:
            return StudyError(
                f"study '{self.name}': the last {STUCK_AFTER} candidates from {self.space_name} could not be "
                f"trained (last: {self.stuck}); loosen --max-params/--max-gflops or narrow the space"
            )
        return None
