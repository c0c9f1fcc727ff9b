"""CTC training of one run config on a prepared corpus, and loading trained runs.

``Trainer(run, data, out_dir, device).fit()`` trains; ``fit`` is a loop of
``_train_epoch``, ``_evaluate`` and ``_checkpoint`` over a :class:`TrainState`
that is checkpointed whole, so ``--resume`` continues bit for bit. The device
is a parameter everywhere (tests run the trainer on ``meta``), and the loss is
read back to the host every ``log_every`` steps, not every step.

A run directory is self-contained::

    RUN_DIR/
      config.yaml      the run config (layers + training settings + frontend)
      tokenizer.json   the letters
      frontend.json    frontend spec, identity, feature size, frame rate
      last.pt          full training state after the last checkpoint (resume point)
      best.pt          weights of the epoch with the best dev WER
      metrics.jsonl    one line per epoch
      result.json      the final status and scores

Statuses: ``completed``, ``early_stopped``, ``time_budget``, ``pruned`` (the
epoch callback asked), ``diverged`` (non-finite loss), ``oom``,
``interrupted`` (Ctrl-C; resumable) and ``infeasible`` (too much downsampling
for the corpus; raised before training as :class:`InfeasibleError`).
"""

from __future__ import annotations

import dataclasses
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

from stt import __version__
from stt.augment import spec_augment
from stt.batching import FeatureDataset, FrameBudgetBatchSampler, Prefetcher, bucket_length, collate
from stt.checkpoint import load_checkpoint, save_checkpoint
from stt.data import TrainingData
from stt.device import autocast, pick_device, release_cached_memory, to_host, uses_bf16
from stt.errors import CheckpointError, ConfigError
from stt.evaluation import evaluate_split
from stt.files import make_dir, write_text
from stt.metrics import Scores
from stt.model import STTModel, count_parameters, forward_gflops_per_second
from stt.run_config import RunConfig, TrainConfig, load_run_config
from stt.text import LetterTokenizer

log = logging.getLogger(__name__)


class InfeasibleError(ConfigError):
    """The model's output frame rate is too low for the corpus's letters (CTC cannot align)."""


@dataclass
class TrainResult:
    status: str
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


def ctc_min_frames(targets: list[list[int]]) -> list[int]:
    """Frames CTC needs per target: one per label plus a blank between repeated labels."""
    return [len(t) + sum(1 for a, b in zip(t, t[1:]) if a == b) for t in targets]


def check_feasible(
    run: RunConfig, frames: list[int], targets: list[list[int]], fps: float, max_infeasible: float = 0.02
) -> list[int]:
    """Return the indices CTC can align; raise InfeasibleError when too many cannot.

    A few very fast utterances can be dropped (``max_infeasible``, 2 %), beyond
    that the config's total stride is too large for this corpus.
    """
    out = [run.layers.output_lengths(n) for n in frames]
    need = ctc_min_frames(targets)
    ok = [i for i, (o, n) in enumerate(zip(out, need)) if o >= n]
    bad = len(frames) - len(ok)
    if bad > max_infeasible * len(frames):
        secs = [f / fps for f in frames]
        rate = max(n / s for n, s in zip(need, secs))
        stride = run.layers.total_stride
        raise InfeasibleError(
            f"total stride {stride} gives {fps / stride:.1f} output frames/s, but {bad} of {len(frames)} training "
            f"utterances need more (up to {rate:.1f} letters/s incl. repeats); use a total stride <= "
            f"{max(1, int(fps / rate))}"
        )
    return ok


class Trainer:
    """Train one run config on opened data; see the module docstring for the run directory.

    Args:
        run: the run config (layers, training settings, frontend).
        data: the opened train/dev(/test) features (:func:`stt.data.open_training_data`).
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
        self.keep = check_feasible(run, train.frames, self.train_set.targets, train.frames_per_second)
        self.durations = [u["duration"] for u in train.utterances]
        torch.manual_seed(cfg.seed)
        self.model = STTModel(
            run.layers,
            input_size=train.feature_size,
            input_proj=run.input_proj,
            output_size=len(data.tokenizer),
            residual=run.residual,
        ).to(self.device)
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
        scores, *_ = evaluate_split(
            self.model,
            self.data.caches[role],
            self.data.tokenizer,
            self.device,
            self.run.train.batch_frames,
            self.run.train.precision,
        )
        return scores

    def _checkpoint(self) -> None:
        state = self.state
        state.wall_seconds = self._elapsed()
        state.rng_cpu = torch.get_rng_state()
        state.rng_cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        self._save(
            "last.pt",
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

    def _write_run_files(self):
        make_dir(self.out)
        self.run.save(self.out / "config.yaml")
        self.data.tokenizer.save(self.out / "tokenizer.json")
        train = self.data.train
        write_text(
            self.out / "frontend.json",
            json.dumps(
                {
                    "spec": self.run.frontend,
                    "identity": train.frontend,
                    "feature_size": train.feature_size,
                    "frames_per_second": train.frames_per_second,
                    "splits": self.data.split_names,
                },
                indent=1,
            ),
        )

    def _save(self, name: str, state: dict) -> None:
        save_checkpoint(state, self.out / name)

    def _elapsed(self) -> float:
        return self._wall_base + time.time() - self._t_start

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False, on_epoch: Callable[[int, dict], str | None] | None = None) -> TrainResult:
        """Train; ``on_epoch(epoch, metrics)`` may return ``"prune"`` to stop (status ``pruned``)."""
        self._t_start = time.time()
        last = self.out / "last.pt"
        resuming = resume and last.exists()
        if resuming:
            self._restore(last)  # before anything is written: a checkpoint that fails to load changes nothing
        self._write_run_files()
        if resuming:
            log.info("resuming %s at epoch %d, batch %d", self.out, self.state.epoch + 1, self.state.step_in_epoch)
        elif resume:
            log.info("no checkpoint in %s: starting from scratch", self.out)
        else:
            for stale in ("last.pt", "best.pt", "metrics.jsonl", "result.json"):
                (self.out / stale).unlink(missing_ok=True)
        self._wall_base = self.state.wall_seconds
        self._on_epoch = on_epoch
        cfg, state = self.run.train, self.state
        result = TrainResult(
            status="completed",
            run_dir=str(self.out),
            params=count_parameters(self.model),
            device=str(self.device),
            precision=self.precision,
            gflops_per_second=forward_gflops_per_second(self.model, round(self.data.frames_per_second)),
        )
        try:
            while state.epoch < cfg.epochs:
                diverged = self._train_epoch()
                if diverged:
                    result.status, result.reason = "diverged", diverged
                    break
                metrics = self._end_epoch()
                if on_epoch is not None and on_epoch(state.epoch, metrics) == "prune":
                    result.status, result.reason = "pruned", f"pruned after epoch {state.epoch}"
                    break
                if cfg.patience and state.stale >= cfg.patience:
                    result.status, result.reason = "early_stopped", f"no dev-WER gain for {cfg.patience} epochs"
                    break
                if self.max_seconds and metrics["elapsed"] > self.max_seconds:
                    result.status, result.reason = "time_budget", f"stopped after {metrics['elapsed']:.0f} s"
                    break
        except _StopAtProbe as stop:
            result.status, result.reason = "pruned", f"pruned after the probe ({stop.fraction:.2f} of epoch 1)"
        except KeyboardInterrupt:
            self._checkpoint()
            result.status, result.reason = "interrupted", "Ctrl-C; resume with --resume"
            self._finish(result)
            raise
        except torch.OutOfMemoryError as e:
            release_cached_memory(self.device)  # the next trial in this process starts from a clean cache
            result.status, result.reason = "oom", str(e).splitlines()[0][:200]
        finally:
            if self.compiled:
                torch._dynamo.reset()  # compiled graphs hold this model: let them go with it
        return self._finish(result)

    def _train_epoch(self) -> str | None:
        """Train the rest of the current epoch; returns a reason when the loss went non-finite."""
        from tqdm import tqdm

        state, cfg = self.state, self.run.train
        self.sampler.set_epoch(state.epoch, start=state.step_in_epoch)
        self.model.train()
        # its own generator: a DataLoader draws a seed per iterator, and from the global RNG that would
        # shift every dropout mask of a resumed run against an uninterrupted one
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.train_set, self.keep),
            batch_sampler=self.sampler,
            collate_fn=functools.partial(collate, buckets_per_octave=self.buckets),
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        batches = Prefetcher(loader, self._to_device) if self.prefetch else map(self._to_device, loader)
        tty = sys.stderr.isatty()
        total = len(self.sampler.batches)
        bar = tqdm(
            total=total,
            initial=state.step_in_epoch,
            desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
            disable=not (self.progress and tty),
            leave=False,
        )
        loss_acc = torch.zeros((), device=self.device)  # summed on the device, read every log_every steps
        t_mark = time.time()

        def read_loss() -> bool:
            nonlocal loss_acc, t_mark
            state.loss_sum += float(to_host(loss_acc))  # the sync point
            loss_acc = torch.zeros((), device=self.device)
            now = time.time()
            state.train_seconds += now - t_mark
            t_mark = now
            return math.isfinite(state.loss_sum)

        probe_at = math.ceil(self.probe * total) if self.probe and state.epoch == 0 and not state.probed else 0
        try:
            for feats, lengths, targets, target_lens, audio in batches:
                loss_acc += self.train_step(feats, lengths, targets, target_lens)
                state.step_in_epoch += 1
                state.step += 1
                state.audio_seconds += audio
                bar.update(1)
                logged = state.step_in_epoch % self.log_every == 0
                ckpt = self.checkpoint_every and state.step_in_epoch % self.checkpoint_every == 0
                probe = state.step_in_epoch == probe_at
                if logged or ckpt or probe:
                    if not read_loss():
                        return f"non-finite loss at epoch {state.epoch + 1}, by step {state.step_in_epoch}"
                    if ckpt or probe:
                        state.probed = state.probed or probe
                        self._checkpoint()
                    if probe:
                        self._probe(state.step_in_epoch / total)  # raises _StopAtProbe when told to stop
                        t_mark = time.time()  # the probe's evaluation is not training time
                    if logged:
                        mean = state.loss_sum / state.step_in_epoch
                        bar.set_postfix(loss=f"{mean:.3f}")
                        if self.progress and not tty:
                            log.info(
                                "epoch %d/%d step %d/%d loss %.3f",
                                state.epoch + 1,
                                cfg.epochs,
                                state.step_in_epoch,
                                total,
                                mean,
                            )
        finally:
            bar.close()
        if not read_loss():
            return f"non-finite loss at epoch {state.epoch + 1}, by step {state.step_in_epoch}"
        return None

    def _probe(self, fraction: float) -> None:
        """Score dev part-way through the first epoch and ask ``on_epoch(0, metrics)`` whether to go on.

        A search's cheapest look at a candidate (search/asha.py): the checkpoint is on disk first, so a
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
        state, cfg = self.state, self.run.train
        dev = self._evaluate("dev")
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
        write_text(self.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history))
        if dev.wer < state.best_wer:
            state.best_wer, state.best_epoch, state.stale = dev.wer, state.epoch, 0
            self._save(
                "best.pt",
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
        if state.best_epoch > 0 and result.status not in ("interrupted",):
            best = load_checkpoint(self.out / "best.pt", keys=("model", "epoch", "dev_wer", "dev_cer"))
            result.best_epoch, result.dev_wer, result.dev_cer = best["epoch"], best["dev_wer"], best["dev_cer"]
            if "test" in self.data.caches and result.status not in ("pruned", "diverged", "oom"):  # not worth the time
                self.model.load_state_dict(best["model"])
                test = self._evaluate("test")
                result.test_wer, result.test_cer = test.wer, test.cer
        write_text(self.out / "result.json", json.dumps(asdict(result), indent=1))
        log.info(
            "run %s: %s%s -> %s",
            result.status,
            f"dev WER {100 * result.dev_wer:.1f}% " if result.dev_wer is not None else "",
            f"test WER {100 * result.test_wer:.1f}%" if result.test_wer is not None else "",
            self.out,
        )
        return result


# --- trained runs ---------------------------------------------------------------------


@dataclass
class LoadedRun:
    model: STTModel
    run: RunConfig
    tokenizer: LetterTokenizer
    frontend: dict
    result: dict | None


def load_run(run_dir: str | Path, which: str = "best", device: str | None = None) -> LoadedRun:
    """A trained run directory -> model (eval mode) with its config, tokenizer and frontend."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    for name in ("config.yaml", "tokenizer.json", "frontend.json", f"{which}.pt"):
        if not (run_dir / name).exists():
            raise CheckpointError(f"{run_dir}: not a trained run directory (missing {name})")
    state = load_checkpoint(run_dir / f"{which}.pt", keys=("model",))  # first: the file that travels most
    run = load_run_config(run_dir / "config.yaml")
    tok = LetterTokenizer.load(run_dir / "tokenizer.json")
    fe = _read_json(run_dir / "frontend.json", ("spec", "feature_size"))
    result = _read_json(run_dir / "result.json", ()) if (run_dir / "result.json").exists() else None
    dev = pick_device(device)
    model = STTModel(
        run.layers,
        input_size=fe["feature_size"],
        input_proj=run.input_proj,
        output_size=len(tok),
        residual=run.residual,
    ).to(dev)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{run_dir / f'{which}.pt'}: weights do not fit {run_dir / 'config.yaml'} ({str(e).splitlines()[0][:160]})"
        ) from None
    model.eval()
    return LoadedRun(model, run, tok, fe, result)


def _read_json(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise CheckpointError(f"{path}: expected an object with keys {', '.join(keys)}")
    return data
