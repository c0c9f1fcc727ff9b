"""CTC training of one run config on a prepared corpus.

``Trainer(run, data, out_dir, device).fit()`` trains into a run directory (its layout: :mod:`stt.train.run`);
``fit`` is a loop of ``_train_epoch``, ``_end_epoch`` and ``_checkpoint`` over a :class:`TrainState` that is
checkpointed whole, so ``--resume`` continues bit for bit. The device is a parameter everywhere (tests run
the trainer on ``meta``), and the loss is read back to the host every ``log_every`` steps, not every step.
A config whose total stride is too large for the corpus's letters fails before training
(:class:`stt.train.feasibility.InfeasibleError`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from stt.core import __version__
from stt.core.checkpoint import load_checkpoint, save_checkpoint
from stt.core.device import autocast, pick_device, release_cached_memory, to_host, uses_bf16
from stt.core.errors import CheckpointError
from stt.core.files import write_text
from stt.core.signals import stop_signals_deferred, stop_signals_held
from stt.data.augment import spec_augment
from stt.data.batching import FeatureDataset, FrameBudgetBatchSampler, Prefetcher, bucket_length, collate
from stt.data.training_data import TrainingData
from stt.model.measure import measure
from stt.model.network import build_model
from stt.train import run as rundir
from stt.train.evaluation import Evaluator
from stt.train.feasibility import check_feasible
from stt.train.metrics import Scores
from stt.train.run_config import RunConfig, TrainConfig

log = logging.getLogger(__name__)


class RunStatus(enum.StrEnum):
    """How a training run ended (``result.json``'s ``status``)."""

    COMPLETED = "completed"  # every epoch trained
    EARLY_STOPPED = "early_stopped"  # no dev-WER gain for ``train.patience`` epochs
    TIME_BUDGET = "time_budget"  # stopped after the epoch that crossed ``max_seconds``
    PRUNED = "pruned"  # the epoch callback (a search's pruner) asked it to stop
    DIVERGED = "diverged"  # the training loss went non-finite
    OOM = "oom"  # the device ran out of memory
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM, after a checkpoint: ``--resume`` continues it

    @property
    def finished(self) -> bool:
        """A run that ended as it was meant to (``stt train`` exits 0)."""
        return self in (RunStatus.COMPLETED, RunStatus.EARLY_STOPPED, RunStatus.TIME_BUDGET)


@dataclass
class TrainResult:
    status: RunStatus
    run_dir: str
    epochs: int = 0  # epochs completed
    best_epoch: int = -1
    dev_wer: float | None = None  # best dev WER (the one best.pt has)
    dev_cer: float | None = None
    test_wer: float | None = None  # with best.pt, when a test split exists
    test_cer: float | None = None
    params: int = 0
    gflops_per_second: float = 0.0  # forward GFLOPs per second of input audio
    audio_seconds_per_second: float = 0.0  # training throughput
    train_seconds: float = 0.0  # wall time in training steps (not evaluation)
    wall_seconds: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"  # what training and evaluation ran in: "fp32" or "bf16" (autocast)
    reason: str = ""
    history: list = field(default_factory=list)
    version: str = __version__


class _StopAtProbe(Exception):
    def __init__(self, fraction: float):
        super().__init__(fraction)
        self.fraction = fraction


@dataclass
class TrainState:
    """Where a run stands, besides weights and optimizer: checkpointed whole, restored whole."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches of the current epoch already trained: the sampler resumes here
    step: int = 0  # optimizer steps over all epochs
    loss_sum: float = 0.0  # summed training loss of this epoch's steps so far
    best_wer: float = math.inf  # best dev WER so far
    best_epoch: int = -1  # the epoch that reached it (-1: none yet)
    stale: int = 0  # epochs since the best (early stopping)
    probed: bool = False  # the first epoch's probe (Trainer's ``probe``) is done: a resumed run does not repeat it
    history: list = field(default_factory=list)  # one metrics dict per finished epoch
    train_seconds: float = 0.0  # wall time inside training steps
    audio_seconds: float = 0.0  # audio trained on
    wall_seconds: float = 0.0  # wall time of the run up to the last checkpoint, all sessions
    rng_cpu: torch.Tensor | None = None  # torch's CPU generator (dropout on CPU)
    rng_cuda: list | None = None  # one state per CUDA device (dropout on GPU)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def build_scheduler(opt: torch.optim.Optimizer, tc: TrainConfig, total_steps: int):
    """One-cycle, or linear warm-up then cosine decay to zero, per optimizer step."""
    if tc.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=tc.lr, total_steps=total_steps, pct_start=max(tc.warmup, 1e-3), anneal_strategy="cos"
        )
    warm = max(1, int(tc.warmup * total_steps))
    return torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm - 1),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps - warm)),
        ],
        milestones=[warm],
    )


def compile_wanted(tc: TrainConfig, device: torch.device) -> bool:
    return tc.compile is True or (tc.compile == "auto" and device.type == "cuda")


class Trainer:
    """Train one run config on opened data; its run directory: :mod:`stt.train.run`.

    Args:
        run: the run config (layers, training settings, frontend).
        data: the opened train/dev(/test) features (:func:`stt.data.training_data.open_training_data`).
        out_dir: the run directory (created by ``fit``).
        device: "cpu", "cuda", "cuda:1", "meta" (tests) ... (default: CUDA when available).
        max_seconds: stop after the epoch that crosses this much wall time (status ``time_budget``).
        checkpoint_every: also checkpoint every N steps inside an epoch (0: at epoch ends only).
        log_every: read the loss back from the device every N steps (a sync on a GPU), check it
            is finite and, when stderr is no terminal, log a progress line.
        prefetch: load and copy batches on a background thread (default: on CUDA).
        compile_backend: ``torch.compile`` backend when the run compiles (tests count graphs with their own).
        probe: a fraction of the first epoch after which dev is scored once and ``on_epoch(0, metrics)``
            may stop the run (0: no probe); a search's cheapest look at a candidate.
        init: weights to start from instead of a random initialisation (a grown parent's, see
            :func:`stt.train.run.grown_weights`); a resumed run starts from its checkpoint instead.
    """

    def __init__(
        self,
        run: RunConfig,
        data: TrainingData,
        out_dir: str | Path,
        device: str | None = None,
        max_seconds: float | None = None,
        checkpoint_every: int = 0,
        log_every: int = 50,
        progress: bool = True,
        prefetch: bool | None = None,
        compile_backend="inductor",
        probe: float = 0.0,
        init: dict | None = None,
    ):
        self.run, self.data, self.out = run, data, Path(out_dir)
        self.probe = probe
        self._on_epoch = None
        self.device = pick_device(device)
        self.max_seconds, self.checkpoint_every, self.log_every = max_seconds, checkpoint_every, max(1, log_every)
        self.progress = progress
        self.prefetch = self.device.type == "cuda" if prefetch is None else prefetch
        cfg = run.train
        train = data.train
        self.train_set = FeatureDataset(train, data.tokenizer)
        self.keep = check_feasible(run.layers, train.frames, self.train_set.targets, train.frames_per_second)
        self.durations = [u["duration"] for u in train.utterances]
        torch.manual_seed(cfg.seed)
        self.model = build_model(run, train.feature_size, len(data.tokenizer)).to(self.device)
        if init is not None:
            try:
                self.model.load_state_dict(init)
            except RuntimeError as e:
                raise CheckpointError(
                    f"the initial weights do not fit {run.layers!r} ({str(e).splitlines()[0][:160]})"
                ) from None
        self.evaluator = Evaluator(self.model, data.tokenizer, self.device, cfg.batch_frames, cfg.precision)
        self.sampler = FrameBudgetBatchSampler(
            [train.frames[i] for i in self.keep], cfg.batch_frames, shuffle=True, seed=cfg.seed
        )
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = build_scheduler(self.opt, cfg, cfg.epochs * len(self.sampler.batches))
        self.precision = "bf16" if uses_bf16(self.device, cfg.precision) else "fp32"
        self.compiled = compile_wanted(cfg, self.device)
        self.buckets = cfg.buckets_per_octave if self.compiled else 0
        self.forward = self._compile(compile_backend) if self.compiled else self.model
        self.state = TrainState()

    # -- pieces ---------------------------------------------------------------------------
    def _compile(self, backend):
        # a fresh Dynamo cache per run: an earlier trial's graphs must not count against this model's
        # recompile limit. Padded lengths are bucketed, so the graphs are one per bucket the corpus
        # has (known now), with the batch dimension dynamic.
        torch._dynamo.reset()
        frames = [self.data.train.frames[i] for i in self.keep]
        shapes = {
            bucket_length(max(frames[i] for i in b), self.run.train.buckets_per_octave) for b in self.sampler.batches
        }
        torch._dynamo.config.recompile_limit = max(8, len(shapes) + 2)
        self.compile_shapes = shapes
        return torch.compile(self.model, backend=backend)

    def _to_device(self, b):
        """Host side of a step (runs on the prefetch thread): audio seconds, padding, the copy."""
        audio = sum(self.durations[i] for i in b.index.tolist())  # index: corpus indices (Subset passes them through)
        # without padding every mask can be skipped; compiled runs always pass lengths (one graph per shape)
        padded = self.compiled or int(b.feat_lens.min()) < b.feats.size(1)
        cuda = self.device.type == "cuda"
        move = (lambda t: t.pin_memory().to(self.device, non_blocking=True)) if cuda else (lambda t: t.to(self.device))
        lengths = move(b.feat_lens) if padded else None
        return move(b.feats), lengths, move(b.targets), move(b.target_lens), audio

    def train_step(self, feats, lengths, targets, target_lens) -> torch.Tensor:
        """One optimizer step on a device batch; returns the loss, still on the device (no sync)."""
        cfg = self.run.train
        if cfg.freq_masks or cfg.time_masks:
            feats = spec_augment(feats, lengths, cfg.freq_masks, cfg.freq_width, cfg.time_masks, cfg.time_width)
        if self.compiled:
            torch._dynamo.maybe_mark_dynamic(feats, 0)
        with autocast(self.device, cfg.precision):
            logits, out_lens = self.forward(feats, lengths)  # [B, T', V], [B]
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [T', B, V] for ctc_loss
        loss = F.ctc_loss(
            log_probs, targets, out_lens, target_lens, blank=self.data.tokenizer.blank, zero_infinity=True
        )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        return loss.detach()

    def _evaluate(self, role: str) -> Scores:
        return self.evaluator.score(self.data.caches[role])

    def _checkpoint(self) -> None:
        state = self.state
        state.wall_seconds = self._elapsed()
        state.rng_cpu = torch.get_rng_state()
        state.rng_cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        self._save(
            rundir.LAST,
            {
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "state": state.to_dict(),
            },
        )

    def _restore(self, path: Path) -> None:
        checkpoint = load_checkpoint(path, keys=("model", "optimizer", "scheduler", "state"))
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.opt.load_state_dict(checkpoint["optimizer"])
            self.sched.load_state_dict(checkpoint["scheduler"])
            self.state = TrainState.from_dict(checkpoint["state"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{path}: does not fit this run's config ({str(e).splitlines()[0][:160]}); "
                "train afresh with --overwrite"
            ) from None
        if self.state.rng_cpu is not None:
            torch.set_rng_state(self.state.rng_cpu)
        if self.state.rng_cuda is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(self.state.rng_cuda)

    def _save(self, name: str, state: dict) -> None:
        save_checkpoint(state, self.out / name)

    def _elapsed(self) -> float:
        return self._wall_base + time.time() - self._t_start

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False, on_epoch: Callable[[int, dict], str | None] | None = None) -> TrainResult:
        """Train; ``on_epoch(epoch, metrics)`` may return ``"prune"`` to stop (status ``pruned``)."""
        self._t_start = time.time()
        self._start(resume)
        self._on_epoch = on_epoch
        size = measure(self.run, self.data.feature_size, len(self.data.tokenizer), round(self.data.frames_per_second))
        result = TrainResult(
            status=RunStatus.COMPLETED,
            run_dir=str(self.out),
            params=size.params,
            device=str(self.device),
            precision=self.precision,
            gflops_per_second=size.gflops_per_second,
        )
        try:
            self._epochs(result)
        except _StopAtProbe as stop:
            result.status, result.reason = RunStatus.PRUNED, f"pruned after the probe ({stop.fraction:.2f} of epoch 1)"
        except KeyboardInterrupt:
            with stop_signals_held():  # a second signal (Slurm signals every process of a job) must not cut the save
                self._checkpoint()
                result.status, result.reason = RunStatus.INTERRUPTED, "Ctrl-C; resume with --resume"
                self._finish(result)
            raise
        except torch.OutOfMemoryError as e:
            release_cached_memory(self.device)  # the next trial in this process starts from a clean cache
            result.status, result.reason = RunStatus.OOM, str(e).splitlines()[0][:200]
        finally:
            if self.compiled:
                torch._dynamo.reset()  # compiled graphs hold this model: let them go with it
        return self._finish(result)

    def _start(self, resume: bool) -> None:
        """Restore the last checkpoint (``resume``) or clear a previous run's files; write the run's description."""
        last = self.out / rundir.LAST
        resuming = resume and last.exists()
        if resuming:
            self._restore(last)  # before anything is written: a checkpoint that fails to load changes nothing
        rundir.write_description(self.out, self.run, self.data)
        if resuming:
            log.info("resuming %s at epoch %d, batch %d", self.out, self.state.epoch + 1, self.state.step_in_epoch)
        elif resume:
            log.info("no checkpoint in %s: starting from scratch", self.out)
        else:
            for stale in (rundir.LAST, rundir.BEST, rundir.METRICS, rundir.RESULT):
                (self.out / stale).unlink(missing_ok=True)
        self._wall_base = self.state.wall_seconds

    def _epochs(self, result: TrainResult) -> None:
        """Train epoch after epoch until the last, or until a stop rule sets ``result``'s status."""
        cfg, state = self.run.train, self.state
        while state.epoch < cfg.epochs:
            diverged = self._train_epoch()
            if diverged:
                result.status, result.reason = RunStatus.DIVERGED, diverged
                return
            metrics = self._end_epoch()
            if self._on_epoch is not None and self._on_epoch(state.epoch, metrics) == "prune":
                result.status, result.reason = RunStatus.PRUNED, f"pruned after epoch {state.epoch}"
                return
            if cfg.patience and state.stale >= cfg.patience:
                result.status, result.reason = RunStatus.EARLY_STOPPED, f"no dev-WER gain for {cfg.patience} epochs"
                return
            if self.max_seconds and metrics["elapsed"] > self.max_seconds:
                result.status, result.reason = RunStatus.TIME_BUDGET, f"stopped after {metrics['elapsed']:.0f} s"
                return

    def _batches(self):
        """The rest of the current epoch's batches, on the device (prefetched on a thread where that pays)."""
        cfg = self.run.train
        # its own generator: a DataLoader draws a seed per iterator, and from the global RNG that would
        # shift every dropout mask of a resumed run against an uninterrupted one
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.train_set, self.keep),
            batch_sampler=self.sampler,
            collate_fn=functools.partial(collate, buckets_per_octave=self.buckets),
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        return Prefetcher(loader, self._to_device) if self.prefetch else map(self._to_device, loader)

    def _train_epoch(self) -> str | None:
        """Train the rest of the current epoch; returns a reason when the loss went non-finite."""
        from tqdm import tqdm

        state = self.state
        self.sampler.set_epoch(state.epoch, start=state.step_in_epoch)
        self.model.train()
        total = len(self.sampler.batches)
        probe_at = math.ceil(self.probe * total) if self.probe and state.epoch == 0 and not state.probed else 0
        meter = _LossMeter(state, self.device)
        shown = self.progress and sys.stderr.isatty()
        desc = f"epoch {state.epoch + 1}/{self.run.train.epochs}"
        with tqdm(total=total, initial=state.step_in_epoch, desc=desc, disable=not shown, leave=False) as bar:
            for feats, lengths, targets, target_lens, audio in self._batches():
                meter.add(self.train_step(feats, lengths, targets, target_lens))
                state.step_in_epoch += 1
                state.step += 1
                state.audio_seconds += audio
                bar.update(1)
                if not self._between_steps(meter, bar, total, probe_at):
                    return self._non_finite()
        return None if meter.read() else self._non_finite()

    def _between_steps(self, meter: _LossMeter, bar, total: int, probe_at: int) -> bool:
        """Every ``log_every`` / ``checkpoint_every`` steps and at the probe: read the loss (a sync), checkpoint,
        probe, log. Returns False when the loss went non-finite."""
        state = self.state
        logged = state.step_in_epoch % self.log_every == 0
        ckpt = self.checkpoint_every and state.step_in_epoch % self.checkpoint_every == 0
        probe = state.step_in_epoch == probe_at
        if not (logged or ckpt or probe):
            return True
        if not meter.read():
            return False
        if ckpt or probe:
            state.probed = state.probed or probe
            self._checkpoint()
        if probe:
            self._probe(state.step_in_epoch / total)  # raises _StopAtProbe when told to stop
            meter.restart_clock()  # the probe's evaluation is not training time
        if logged:
            mean = state.loss_sum / state.step_in_epoch
            bar.set_postfix(loss=f"{mean:.3f}")
            if self.progress and not sys.stderr.isatty():
                epochs = self.run.train.epochs
                log.info("epoch %d/%d step %d/%d loss %.3f", state.epoch + 1, epochs, state.step_in_epoch, total, mean)
        return True

    def _non_finite(self) -> str:
        return f"non-finite loss at epoch {self.state.epoch + 1}, by step {self.state.step_in_epoch}"

    def _probe(self, fraction: float) -> None:
        """Score dev part-way through the first epoch and ask ``on_epoch(0, metrics)`` whether to go on.

        A search's cheapest look at a candidate (search/pruners/asha.py): the checkpoint is on disk first, so a
        candidate stopped here resumes mid-epoch, exactly where it stood.
        """
        dev = self._evaluate("dev")
        metrics = {
            "epoch": 0,
            "probe": fraction,
            "dev_loss": dev.loss,
            "dev_wer": dev.wer,
            "dev_cer": dev.cer,
            "elapsed": self._elapsed(),
        }
        if self.progress:
            log.info(
                "probe after %.2f of epoch 1: dev loss %.3f  WER %.1f%%  CER %.1f%%",
                fraction,
                dev.loss,
                100 * dev.wer,
                100 * dev.cer,
            )
        if self._on_epoch is not None and self._on_epoch(0, metrics) == "prune":
            raise _StopAtProbe(fraction)

    def _end_epoch(self) -> dict:
        """Score dev, keep the best weights, log the epoch, checkpoint."""
        dev = self._evaluate("dev")
        with stop_signals_deferred():  # counted, recorded and checkpointed together, or not at all
            return self._record_epoch(dev)

    def _record_epoch(self, dev) -> dict:
        state, cfg = self.state, self.run.train
        train_loss = state.loss_sum / max(1, state.step_in_epoch)
        state.epoch += 1
        state.step_in_epoch, state.loss_sum = 0, 0.0
        metrics = {
            "epoch": state.epoch,
            "train_loss": train_loss,
            "dev_loss": dev.loss,
            "dev_wer": dev.wer,
            "dev_cer": dev.cer,
            "lr": self.sched.get_last_lr()[0],
            "audio_seconds_per_second": state.audio_seconds / max(state.train_seconds, 1e-9),
            "elapsed": self._elapsed(),
        }
        state.history.append(metrics)
        # rewritten whole from the history (not appended): after a kill and a resume it holds each epoch once
        write_text(self.out / rundir.METRICS, "".join(json.dumps(h) + "\n" for h in state.history))
        if dev.wer < state.best_wer:
            state.best_wer, state.best_epoch, state.stale = dev.wer, state.epoch, 0
            self._save(
                rundir.BEST,
                {"model": self.model.state_dict(), "epoch": state.epoch, "dev_wer": dev.wer, "dev_cer": dev.cer},
            )
        else:
            state.stale += 1
        self._checkpoint()
        if self.progress:
            log.info(
                "epoch %d/%d  loss %.3f  dev loss %.3f  WER %.1f%%  CER %.1f%%  %.0f audio-s/s",
                state.epoch,
                cfg.epochs,
                train_loss,
                dev.loss,
                100 * dev.wer,
                100 * dev.cer,
                metrics["audio_seconds_per_second"],
            )
        return metrics

    def _finish(self, result: TrainResult) -> TrainResult:
        state = self.state
        result.epochs, result.history = state.epoch, state.history
        result.train_seconds = state.train_seconds
        result.wall_seconds = self._elapsed()
        result.audio_seconds_per_second = state.audio_seconds / max(state.train_seconds, 1e-9)
        if state.best_epoch > 0 and result.status != RunStatus.INTERRUPTED:
            best = load_checkpoint(self.out / rundir.BEST, keys=("model", "epoch", "dev_wer", "dev_cer"))
            result.best_epoch, result.dev_wer, result.dev_cer = best["epoch"], best["dev_wer"], best["dev_cer"]
            if "test" in self.data.caches and result.status not in (
                RunStatus.PRUNED,
                RunStatus.DIVERGED,
                RunStatus.OOM,
            ):  # not worth the time
                self.model.load_state_dict(best["model"])
                test = self._evaluate("test")
                result.test_wer, result.test_cer = test.wer, test.cer
        write_text(self.out / rundir.RESULT, json.dumps(asdict(result), indent=1))
        log.info(
            "run %s: %s%s -> %s",
            result.status,
            f"dev WER {100 * result.dev_wer:.1f}% " if result.dev_wer is not None else "",
            f"test WER {100 * result.test_wer:.1f}%" if result.test_wer is not None else "",
            self.out,
        )
        return result


class _LossMeter:
    """The training loss, summed on the device and read back (a host sync) only when asked."""

    def __init__(self, state: TrainState, device: torch.device):
        self.state, self.device = state, device
        self.sum = torch.zeros((), device=device)  # losses since the last read, on the device
        self.clock = time.time()

    def add(self, loss: torch.Tensor) -> None:
        self.sum += loss

    def read(self) -> bool:
        """Move the device sum into the epoch's loss and the time since the last read into training time.

        Returns whether the epoch's loss is still finite.
        """
        self.state.loss_sum += float(to_host(self.sum))  # the sync point
        self.sum = torch.zeros((), device=self.device)
        self.restart_clock(count=True)
        return math.isfinite(self.state.loss_sum)

    def restart_clock(self, count: bool = False) -> None:
        now = time.time()
        if count:
            self.state.train_seconds += now - self.clock
        self.clock = now
