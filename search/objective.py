"""The objective: sample a config, check it, train it with stt's Trainer, report dev WER.

What each trial stores (user attributes, readable by any Optuna tool):
``config`` (the run config as JSON), ``config_hash``, ``params``,
``gflops_per_second``, ``dev_wer``, ``dev_cer``, ``test_wer``, ``test_cer``,
``epochs``, ``wall_seconds``, ``audio_seconds_per_second``, ``device``, ``precision``,
``version``, ``run_dir``, ``status`` and ``reason``, ``worker`` (host:pid),
``history`` (dev loss, CER and WER per epoch), ``seed`` when the candidate was
enqueued from a config, ``duplicate_of`` when the result was reused, and
``candidate`` (the number of the candidate's first trial) with ``continues`` on a
trial that continues a paused candidate (search/asha.py).

Each epoch the trial reports one dev signal (``prune_on``: CTC loss per letter,
CER or WER) to the pruner. WER is the objective, but it sits near 100 % while a
CTC model still emits mostly blanks, so early rungs rank by a signal that moves.

A trial that cannot or should not train (over budget, infeasible, diverged,
out of memory, a duplicate of a pruned one) is recorded as PRUNED with its
``status`` and ``reason``: it counts towards the study's target and the
sampler learns to avoid it. A trial whose process died stays RUNNING until
``resume`` (or a heartbeat) fails it and re-queues a copy that continues from
the same run directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch

from search.asha import AshaPruner, candidate_of
from search.isolation import ChildDied, ChildFailed, ChildInfeasible, hold_run_dir, train_in_child
from search.space import Space, sample_config
from search.trials import in_play, process_namespace
from stt.files import make_dir, write_text
from stt.model import STTModel, count_parameters, forward_gflops_per_second
from stt.train import InfeasibleError, Trainer

METRIC_ATTRS = (
    "params",
    "gflops_per_second",
    "dev_wer",
    "dev_cer",
    "test_wer",
    "test_cer",
    "epochs",
    "wall_seconds",
    "audio_seconds_per_second",
    "device",
    "precision",
    "version",
    "run_dir",
    "status",
    "reason",
)


def _resumable(run_dir: Path, config_hash: str) -> bool:
    """A checkpoint to continue from, written for this very config (not another study's trial of the same number)."""
    if not (run_dir / "last.pt").exists():
        return False
    try:
        return json.loads((run_dir / "trial.json").read_text())["config_hash"] == config_hash
    except (OSError, ValueError, KeyError):
        return False


class OutOfTime(RuntimeError):
    """The study's time budget ended this trial between two epochs; it fails as interrupted and resumes later."""


class CandidateFailed(RuntimeError):
    """A candidate that failed before training (status and reason are on the trial); counts towards the target."""


@dataclass
class Objective:
    space: Space
    data_dir: str
    runs_dir: str  # the runs root: a trial trains in RUNS_DIR/<run_key>/trial_N (stored relative to the root)
    run_key: str = ""  # the study's folder under the root: its name and the first 8 hex digits of its uid
    objectives: tuple = ("wer",)  # "wer" and optionally "params" / "gflops"
    max_total_stride: int = 4
    max_params: float | None = None
    max_gflops: float | None = None
    epochs: int | None = None  # override the space's train.epochs
    trial_seconds: float | None = None  # per-trial wall budget
    feature_size: int = 80
    device: str | None = None
    target: int | None = None  # the study's target: a trial started beyond it (workers racing) is not trained
    isolate: bool = True  # train each trial in a child process (memory and CUDA state return after every trial)
    dry_run: float | None = None  # load tests: sample, build on meta, sleep this long, score by the config hash
    prune_on: str = "loss"  # the dev signal a trial reports per epoch for the pruner: "loss", "cer" or "wer"
    deadline: float | None = None  # time.time() after which a running trial stops at its next epoch end (resumable)
    progress: bool = False
    log: list = field(default_factory=list)
    _data: object = field(default=None, repr=False)  # the opened corpus, shared by this worker's trials

    def data(self, frontend: str):
        """The corpus's features, opened once per worker and frontend (every trial reads the same cache)."""
        from stt.data import open_training_data

        if self._data is None or self._data.frontend != frontend:
            self._data = open_training_data(self.data_dir, frontend, progress=self.progress, device=self.device)
        return self._data

    def _values(self, attrs: dict):
        out = []
        for o in self.objectives:
            out.append(
                {"wer": attrs.get("dev_wer"), "params": attrs.get("params"), "gflops": attrs.get("gflops_per_second")}[
                    o
                ]
            )
        return out[0] if len(out) == 1 else out

    def __call__(self, trial: optuna.Trial):
        # first: a resumer judges a RUNNING trial by its worker; a trial without one is an orphan
        # (see requeue_dead_trials)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("worker_ns", process_namespace())  # whether a resumer may judge this pid
        trial.set_user_attr("candidate", candidate_of(trial))  # kept by re-queued copies and promotions
        if self._promoted_twice(trial):
            # two workers promoted the same paused candidate at once: the later trial steps aside (FAIL, not counted)
            trial.set_user_attr("status", "duplicate_promotion")
            trial.set_user_attr(
                "reason", f"trial {trial.user_attrs['continues']} is already continued by another trial"
            )
            return float("nan") if len(self.objectives) == 1 else [float("nan")] * len(self.objectives)
        if self._beyond_target(trial):
            # two workers asked at once for the last place: the later-numbered trial steps aside (FAIL, not
            # counted), so the target is met exactly; the study's target callback then stops this worker
            trial.set_user_attr("status", "beyond_target")
            trial.set_user_attr("reason", f"{self.target} trials were already running or finished")
            return float("nan") if len(self.objectives) == 1 else [float("nan")] * len(self.objectives)
        try:
            run = sample_config(trial, self.space, self.max_total_stride)
        except ValueError as e:  # SpaceError/LayerConfigError: the space sampled something that cannot build
            return self._stop(trial, "build_error", f"{type(e).__name__}: {e}"[:500], failed=True)
        if self.epochs:
            run.train.epochs = self.epochs
        # normalised architecture + training settings: what decides the result
        h = hashlib.sha256(json.dumps(run.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
        trial.set_user_attr("config", json.dumps(run.to_dict()))
        trial.set_user_attr("config_hash", h)

        try:
            with torch.device("meta"):  # shapes only: counting needs no weights, and the Trainer builds the real model
                model = STTModel(run.layers, input_size=self.feature_size, input_proj=run.input_proj, output_size=29)
                params, gflops = count_parameters(model), forward_gflops_per_second(model)
            del model
        except Exception as e:
            return self._stop(trial, "build_error", f"{type(e).__name__}: {e}"[:500], failed=True)
        trial.set_user_attr("params", params)
        trial.set_user_attr("gflops_per_second", gflops)
        over = []
        if self.max_params:
            trial.set_constraint("params", params - self.max_params)
            if params > self.max_params:
                over.append(f"{params:,} parameters > --max-params {self.max_params:,.0f}")
        if self.max_gflops:
            trial.set_constraint("gflops", gflops - self.max_gflops)
            if gflops > self.max_gflops:
                over.append(f"{gflops:.3f} GFLOPs/s > --max-gflops {self.max_gflops}")
        if over:
            return self._stop(trial, "over_budget", "; ".join(over))

        if self.dry_run is not None:  # the storage's side of a trial without its training
            time.sleep(self.dry_run)
            trial.set_user_attr("status", "dry_run")
            trial.set_user_attr("dev_wer", int(h[:8], 16) / 16**8)
            return self._values(trial.user_attrs)

        dup = self._find_duplicate(trial, h)
        if dup is not None:
            trial.set_user_attr("duplicate_of", dup.number)
            for k in METRIC_ATTRS:
                if k in dup.user_attrs and k not in ("params", "gflops_per_second"):
                    trial.set_user_attr(k, dup.user_attrs[k])
            if dup.state == optuna.trial.TrialState.PRUNED:
                raise optuna.TrialPruned(f"duplicate of pruned trial {dup.number}")
            return self._values(dup.user_attrs)

        # a re-queued trial inherits its user attributes, so it finds its run directory and resumes there; the
        # path is kept relative to the runs root, which each worker may mount elsewhere (--runs-dir)
        rel = trial.user_attrs.get("run_dir") or f"{self.run_key}/trial_{trial.number}"
        trial.set_user_attr("run_dir", rel)
        run_dir = Path(self.runs_dir) / rel
        if not run_dir.resolve().is_relative_to(Path(self.runs_dir).resolve()):  # a database from elsewhere
            return self._stop(
                trial, "error", f"run_dir {rel!r} points outside the runs root {self.runs_dir}", failed=True
            )
        resume = _resumable(run_dir, h)
        pruner = trial.study.pruner
        # ASHA counts fidelity in thirds of an epoch: a probe after 1/3 of epoch 1 is its cheapest rung
        units = pruner.units if isinstance(pruner, AshaPruner) and len(self.objectives) == 1 else 1
        if resume and len(self.objectives) == 1:
            self._report_history(trial, run_dir, units)
        make_dir(run_dir)
        write_text(
            run_dir / "trial.json",
            json.dumps({"study": trial.study.study_name, "trial": trial.number, "config_hash": h}),
        )
        run_dir = str(run_dir)
        multi = len(self.objectives) > 1

        out_of_time = []

        def on_epoch(epoch, metrics):
            # past the budget, a trial stops at its next epoch end, unless that epoch was its last: it is done
            if self.deadline is not None and time.time() > self.deadline and epoch < run.train.epochs:
                out_of_time.append(epoch)
                return "prune"  # stops after this epoch's checkpoint: a resume continues from it
            if multi:  # Optuna cannot prune multi-objective studies
                return None
            # the candidate's wall time so far, all its trials: the pruner reads its pace from it (AshaPruner.in_time)
            trial.set_user_attr("elapsed", metrics["elapsed"])
            if metrics.get("probe"):
                probed.update(metrics)
                trial.report(metrics[f"dev_{self.prune_on}"], 1)
            else:
                trial.report(metrics[f"dev_{self.prune_on}"], epoch * units)
            return "prune" if trial.should_prune() else None

        probed: dict = {}
        try:
            res = self._train(trial, run, run_dir, resume, on_epoch, probe=1 / units if units > 1 else 0.0)
        except (InfeasibleError, ChildInfeasible) as e:
            return self._stop(trial, "infeasible", str(e))
        except KeyboardInterrupt:
            trial.set_user_attr("status", "interrupted")
            raise
        except optuna.TrialPruned:
            raise
        except (
            Exception
        ) as e:  # a bug, a broken file, a killed child: the trial fails with the reason, the study goes on
            trial.set_user_attr("status", "error")
            trial.set_user_attr(
                "reason", (str(e) if isinstance(e, (ChildFailed, ChildDied)) else f"{type(e).__name__}: {e}")[:500]
            )
            raise
        if res.get("dev_wer") is None and probed:  # stopped at the probe: its dev scores are all there is
            res.update(dev_wer=probed["dev_wer"], dev_cer=probed["dev_cer"], epochs=round(probed["probe"], 2))
        for k in METRIC_ATTRS:
            if k in res and k != "run_dir":  # the trial keeps its run directory relative to the runs root
                trial.set_user_attr(k, res[k])
        trial.set_user_attr("resumed", resume)
        trial.set_user_attr(
            "history", {k: [h.get(k) for h in res["history"]] for k in ("dev_loss", "dev_cer", "dev_wer")}
        )
        if out_of_time:
            where = f"epoch {out_of_time[0]}" if out_of_time[0] else "the probe in epoch 1"
            reason = f"the study's time budget ran out after {where}"
            trial.set_user_attr("status", "interrupted")  # like Ctrl-C: `resume` continues it from its checkpoint
            trial.set_user_attr("reason", reason)
            raise OutOfTime(reason)
        if res["status"] in ("diverged", "oom"):
            return self._stop(trial, res["status"], res["reason"])
        if res["status"] == "pruned":
            pruner = trial.study.pruner
            if isinstance(pruner, AshaPruner):  # waits at its rung; a later promotion continues it from last.pt
                trial.set_user_attr("status", "paused")
                trial.set_user_attr("reason", pruner.reasons.pop(trial.number, res["reason"]))
            raise optuna.TrialPruned(trial.user_attrs["reason"] if isinstance(pruner, AshaPruner) else res["reason"])
        if res["dev_wer"] is None:
            return self._stop(trial, "no_epoch", "no epoch finished")
        return self._values(trial.user_attrs)

    def _train(self, trial, run, run_dir: str, resume: bool, on_epoch, probe: float = 0.0) -> dict:
        """Train in a child process (``isolate``), or here; returns the TrainResult as a dict."""
        if self.isolate:
            job = {
                "run": run.to_dict(),
                "data_dir": self.data_dir,
                "run_dir": run_dir,
                "device": self.device,
                "max_seconds": self.trial_seconds,
                "resume": resume,
                "progress": self.progress,
                "trial": trial.number,
                "probe": probe,
            }
            return train_in_child(job, on_epoch)
        trainer = Trainer(
            run,
            self.data(run.frontend),
            run_dir,
            device=self.device,
            max_seconds=self.trial_seconds,
            progress=self.progress,
            probe=probe,
        )
        with hold_run_dir(run_dir):
            return dataclasses.asdict(trainer.fit(resume=resume, on_epoch=on_epoch))

    def _stop(self, trial, status: str, reason: str, failed: bool = False):
        """End a candidate without training it: PRUNED (the sampler avoids it), or FAIL for a build error."""
        trial.set_user_attr("status", status)
        trial.set_user_attr("reason", reason)
        if failed:
            raise CandidateFailed(f"{status}: {reason}")
        raise optuna.TrialPruned(f"{status}: {reason}")

    def _report_history(self, trial, run_dir: Path, units: int) -> None:
        """Report what a resumed run already has, so this trial holds its candidate's whole curve.

        The earlier trials of the candidate (a paused one, a killed one) hold what they reported, the
        probe included; the run directory's metrics.jsonl holds every finished epoch.
        """
        values = {}
        me = candidate_of(trial)
        for t in trial.study.get_trials(deepcopy=False):
            if t.number != trial.number and candidate_of(t) == me:
                values.update(t.intermediate_values)
        try:
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            history = [json.loads(line) for line in lines if line.strip()]
        except (OSError, ValueError):
            history = []  # the rung comparison then reads the earlier trials' values; training is unaffected
        for h in history:
            value = h.get(f"dev_{self.prune_on}")
            if isinstance(value, (int, float)) and isinstance(h.get("epoch"), int):
                values[h["epoch"] * units] = value
        for step in sorted(values):
            trial.report(values[step], step)

    @staticmethod
    def _promoted_twice(trial) -> bool:
        src = trial.user_attrs.get("continues")
        if src is None:
            return False
        return any(
            t.user_attrs.get("continues") == src
            and t.number < trial.number
            and t.user_attrs.get("status") not in ("duplicate_promotion", "beyond_target")
            and t.state != optuna.trial.TrialState.FAIL
            for t in trial.study.get_trials(deepcopy=False)
        )

    def _beyond_target(self, trial) -> bool:
        if "continues" in trial.user_attrs:  # a promotion continues a counted candidate: never beyond the target
            return False
        if not self.target:
            return False
        ahead = sum(1 for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number and in_play(t))
        return ahead >= self.target

    @staticmethod
    def _find_duplicate(trial, h: str):
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        me = candidate_of(trial)
        for t in trial.study.get_trials(deepcopy=False, states=done):
            if t.user_attrs.get("config_hash") == h and t.number != trial.number and candidate_of(t) != me:
                return t
        return None
