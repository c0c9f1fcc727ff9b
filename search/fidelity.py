"""A study's fidelity plan: how far a candidate trains in full, in which steps it is judged, and by when.

One plan is built per worker from the study's settings and space (``StudySettings.fidelity``) and handed to
both the pruner and the objective, so the rungs the pruner ranks at and the steps a trial reports are counted
alike, from the same full fidelity.
"""

from __future__ import annotations

from dataclasses import dataclass

ETA = 3  # a 1/ETA share of the candidates at a rung goes on; rungs are ETA-fold apart
UNITS = 3  # with a probe, fidelity is counted in thirds of an epoch: the lowest rung is after 1/3 of epoch 1


def rung_epochs(epochs: int, eta: int = ETA, min_epochs: int = 1) -> list[int]:
    """The rungs for a full fidelity of ``epochs`` (any unit): ``[1, 3, ..., epochs]``, each gap at least ``eta``-fold.

    >>> rung_epochs(12), rung_epochs(20), rung_epochs(30), rung_epochs(2)
    ([1, 3, 12], [1, 3, 20], [1, 3, 9, 30], [2])
    """
    rungs, r = [], min_epochs
    while r * eta <= epochs:
        rungs.append(r)
        r *= eta
    return rungs + [epochs]


@dataclass(frozen=True)
class FidelityPlan:
    epochs: int  # the full fidelity: a candidate trained in full has trained this many epochs (its LR schedule's)
    units: int = 1  # fidelity steps per epoch: UNITS when the lowest rung is a probe, else 1
    deadline: float | None = None  # time.time() when the search for candidates ends (None: no budget)
    eta: int = ETA  # rungs are eta-fold apart, and a 1/eta share goes on past each
    stretch_end: float | None = None  # when the study ends, if later: the time between goes to the stretch

    @property
    def end(self) -> float | None:
        """When the study ends: the stretch's deadline, or the search's when there is no stretch."""
        return self.stretch_end or self.deadline

    def __post_init__(self):
        if self.epochs < 1 or self.units < 1 or self.eta < 2:
            raise ValueError(f"a fidelity plan needs epochs >= 1, units >= 1 and eta >= 2, got {self}")

    @property
    def full(self) -> int:
        """The full fidelity, in steps."""
        return self.epochs * self.units

    @property
    def rungs(self) -> list[int]:
        """The steps a candidate is judged at, the full fidelity last: 1/3, 1, 3, 9... epochs in steps."""
        return rung_epochs(self.full, self.eta)

    @property
    def probe(self) -> float:
        """The fraction of epoch 1 after which the trainer scores dev once (0: no probe)."""
        return 1 / self.units if self.units > 1 else 0.0

    def step(self, epoch: int) -> int:
        """The step a finished epoch is reported at."""
        return epoch * self.units

    def at(self, step: int) -> str:
        """A step in words: "after 1/3 of epoch 1", "at epoch 3"."""
        if step % self.units:
            return f"after {step}/{self.units} of epoch {step // self.units + 1}"
        return f"at epoch {step // self.units}"
