"""CTC training of one run config on a prepared corpus, and loading trained runs.

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

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from stt import __version__
from stt.batching import FeatureDataset, FrameBudgetBatchSampler, collate
from stt.decoding import greedy_decode
from stt.features import FeatureCache, open_split
from stt.corpus import find_splits, resolve_split
from stt.metrics import Scores, score
from stt.model import STTModel, count_parameters, forward_gflops_per_second
from stt.run_config import RunConfig, load_run_config
from stt.text import LetterTokenizer

log = logging.getLogger(__name__)


class InfeasibleError(ValueError):
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
    reason: str = ""
    history: list = field(default_factory=list)
    version: str = __version__


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def ctc_min_frames(targets: list[list[int]]) -> list[int]:
    """Frames CTC needs per target: one per label plus a blank between repeated labels."""
    return [len(t) + sum(1 for a, b in zip(t, t[1:]) if a == b) for t in targets]


def check_feasible(run: RunConfig, frames: list[int], targets: list[list[int]], fps: float,
                   max_infeasible: float = 0.02) -> list[int]:  # fmt: skip
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
    """Train one run config on ``data_dir``; see the module docstring for the run directory.

    Args:
        run: the run config (layers, training settings, frontend).
        data_dir: a data folder; its features are prepared on first use.
        out_dir: the run directory (created).
        device: "cpu", "cuda", ... (default: CUDA when available).
        splits: names of the train/dev/test splits (None: resolve "train", "dev", "test").
        max_seconds: stop after the epoch that crosses this much wall time (status ``time_budget``).
        checkpoint_every: also checkpoint every N steps inside an epoch (0: at epoch ends only).
    """

    def __init__(self, run: RunConfig, data_dir: str | Path, out_dir: str | Path, device: str | None = None,
                 splits: dict | None = None, max_seconds: float | None = None, checkpoint_every: int = 0,
                 progress: bool = True):  # fmt: skip
        self.run, self.data_dir, self.out = run, Path(data_dir), Path(out_dir)
        self.device = pick_device(device)
        self.max_seconds, self.checkpoint_every, self.progress = max_seconds, checkpoint_every, progress
        found = find_splits(self.data_dir)
        splits = splits or {}
        self.split_names = {r: resolve_split(found, r, splits.get(r)) for r in ("train", "dev")}
        try:
            self.split_names["test"] = resolve_split(found, "test", splits.get("test"))
        except ValueError:
            self.split_names["test"] = None
        self.caches = {r: open_split(self.data_dir, s, run.frontend, progress=progress)
                       for r, s in self.split_names.items() if s}  # fmt: skip
        self.tokenizer = LetterTokenizer()
        train = self.caches["train"]
        self.train_data = FeatureDataset(train, self.tokenizer)
        self.keep = check_feasible(run, train.frames, self.train_data.targets, train.frames_per_second)
        torch.manual_seed(run.train.seed)
        self.model = STTModel(run.layers, input_size=train.feature_size, input_proj=run.input_proj,
                              output_size=len(self.tokenizer), residual=run.residual).to(self.device)  # fmt: skip

    # -- helpers ----------------------------------------------------------------------
    def _autocast(self):
        tc = self.run.train
        bf16 = tc.precision == "bf16" or (tc.precision == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def _scheduler(self, opt, total_steps: int):
        tc = self.run.train
        if tc.schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=total_steps,
                                                       pct_start=max(tc.warmup, 1e-3), anneal_strategy="cos")  # fmt: skip
        warm = max(1, int(tc.warmup * total_steps))

        def lr_at(step):
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

        return torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    def _write_run_files(self):
        self.out.mkdir(parents=True, exist_ok=True)
        self.run.save(self.out / "config.yaml")
        self.tokenizer.save(self.out / "tokenizer.json")
        train = self.caches["train"]
        (self.out / "frontend.json").write_text(json.dumps({
            "spec": self.run.frontend, "identity": train.frontend, "feature_size": train.feature_size,
            "frames_per_second": train.frames_per_second, "splits": self.split_names,
        }, indent=1))  # fmt: skip

    def _save(self, name: str, state: dict) -> None:
        tmp = self.out / f".{name}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.out / name)

    @torch.no_grad()
    def evaluate(self, role: str, model: torch.nn.Module | None = None) -> tuple[Scores, list[str], list[str], list[str]]:
        """Greedy-decode a split; returns (scores, ids, references, hypotheses)."""
        return evaluate(model or self.model, self.caches[role], self.tokenizer, self.device,
                        self.run.train.batch_frames, self._autocast)  # fmt: skip

    # -- the loop ---------------------------------------------------------------------
    def fit(self, resume: bool = False, on_epoch: Callable[[int, dict], str | None] | None = None) -> TrainResult:
        """Train; ``on_epoch(epoch, metrics)`` may return ``"prune"`` to stop (status ``pruned``)."""
        from tqdm import tqdm

        t_start = time.time()
        tc = self.run.train
        self._write_run_files()
        train = self.caches["train"]
        sampler = FrameBudgetBatchSampler([train.frames[i] for i in self.keep], tc.batch_frames, shuffle=True, seed=tc.seed)
        subset = torch.utils.data.Subset(self.train_data, self.keep)
        # its own generator: a DataLoader draws a seed from the global RNG per iterator, and a resumed
        # run creates one more iterator than an uninterrupted one, which would shift every dropout mask
        loader = torch.utils.data.DataLoader(subset, batch_sampler=sampler, collate_fn=collate, num_workers=tc.num_workers,
                                             generator=torch.Generator().manual_seed(tc.seed))  # fmt: skip
        steps_per_epoch = len(sampler.batches)
        model = self.model
        forward = torch.compile(model) if tc.compile and self.device.type == "cuda" else model
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        sched = self._scheduler(opt, tc.epochs * steps_per_epoch)
        st = {"epoch": 0, "step_in_epoch": 0, "best_wer": math.inf, "best_epoch": -1, "stale": 0, "history": [],
              "train_seconds": 0.0, "audio_seconds": 0.0, "wall_before": 0.0}  # fmt: skip
        last = self.out / "last.pt"
        if resume and last.exists():
            ck = torch.load(last, map_location=self.device, weights_only=False)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            st = ck["state"]
            torch.set_rng_state(ck["rng"]["torch"])
            if ck["rng"].get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
            log.info("resuming %s at epoch %d, batch %d", self.out, st["epoch"] + 1, st["step_in_epoch"])
        elif resume:
            log.info("no checkpoint in %s: starting from scratch", self.out)
        else:
            for stale in ("last.pt", "best.pt", "metrics.jsonl", "result.json"):
                (self.out / stale).unlink(missing_ok=True)

        def checkpoint():
            self._save("last.pt", {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "state": dict(st, wall_before=st["wall_before"] + time.time() - t_start),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            })  # fmt: skip

        params = count_parameters(model)
        result = TrainResult(status="completed", run_dir=str(self.out), params=params, device=str(self.device),
                             gflops_per_second=forward_gflops_per_second(model, round(train.frames_per_second)))  # fmt: skip
        durations = [u["duration"] for u in train.utterances]
        try:
            while st["epoch"] < tc.epochs:
                epoch = st["epoch"]
                sampler.set_epoch(epoch, start=st["step_in_epoch"])
                model.train()
                bar = tqdm(total=steps_per_epoch, initial=st["step_in_epoch"], desc=f"epoch {epoch + 1}/{tc.epochs}",
                           disable=not self.progress, leave=False)  # fmt: skip
                losses = []
                t0 = time.time()
                for feats, feat_lens, targets, target_lens, idx in loader:
                    feats, feat_lens = feats.to(self.device, non_blocking=True), feat_lens.to(self.device)
                    with self._autocast():
                        logits, out_lens = forward(feats, feat_lens)  # [B, T', V]
                    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [T', B, V] for ctc_loss
                    loss = F.ctc_loss(log_probs, targets.to(self.device), out_lens, target_lens.to(self.device),
                                      blank=self.tokenizer.blank, zero_infinity=True)  # fmt: skip
                    if not torch.isfinite(loss):
                        result.status, result.reason = "diverged", f"non-finite loss at epoch {epoch + 1}, step {st['step_in_epoch']}"
                        break
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    opt.step()
                    sched.step()
                    losses.append(loss.item())
                    st["step_in_epoch"] += 1
                    st["audio_seconds"] += sum(durations[i] for i in idx.tolist())  # idx: corpus indices
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
                    if self.checkpoint_every and st["step_in_epoch"] % self.checkpoint_every == 0:
                        st["train_seconds"] += time.time() - t0
                        t0 = time.time()
                        checkpoint()
                bar.close()
                st["train_seconds"] += time.time() - t0
                if result.status == "diverged":
                    break
                dev, *_ = self.evaluate("dev")
                st["epoch"] += 1
                st["step_in_epoch"] = 0
                metrics = {
                    "epoch": st["epoch"], "train_loss": sum(losses) / max(1, len(losses)), "dev_wer": dev.wer,
                    "dev_cer": dev.cer, "lr": sched.get_last_lr()[0],
                    "audio_seconds_per_second": st["audio_seconds"] / max(st["train_seconds"], 1e-9),
                    "elapsed": st["wall_before"] + time.time() - t_start,
                }  # fmt: skip
                st["history"].append(metrics)
                with open(self.out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(metrics) + "\n")
                if dev.wer < st["best_wer"]:
                    st["best_wer"], st["best_epoch"], st["stale"] = dev.wer, st["epoch"], 0
                    self._save("best.pt", {"model": model.state_dict(), "epoch": st["epoch"], "dev_wer": dev.wer,
                                           "dev_cer": dev.cer})  # fmt: skip
                else:
                    st["stale"] += 1
                checkpoint()
                if self.progress:
                    log.info("epoch %d/%d  loss %.3f  dev WER %.1f%%  CER %.1f%%  %.0f audio-s/s", st["epoch"], tc.epochs,
                             metrics["train_loss"], 100 * dev.wer, 100 * dev.cer, metrics["audio_seconds_per_second"])  # fmt: skip
                if on_epoch is not None and on_epoch(st["epoch"], metrics) == "prune":
                    result.status, result.reason = "pruned", f"pruned after epoch {st['epoch']}"
                    break
                if tc.patience and st["stale"] >= tc.patience:
                    result.status, result.reason = "early_stopped", f"no dev-WER gain for {tc.patience} epochs"
                    break
                if self.max_seconds and metrics["elapsed"] > self.max_seconds:
                    result.status, result.reason = "time_budget", f"stopped after {metrics['elapsed']:.0f} s"
                    break
        except KeyboardInterrupt:
            checkpoint()
            result.status, result.reason = "interrupted", "Ctrl-C; resume with --resume"
            self._finish(result, st, t_start)
            raise
        except torch.OutOfMemoryError as e:
            result.status, result.reason = "oom", str(e).splitlines()[0][:200]
        return self._finish(result, st, t_start)

    def _finish(self, result: TrainResult, st: dict, t_start: float) -> TrainResult:
        result.epochs, result.history = st["epoch"], st["history"]
        result.train_seconds = st["train_seconds"]
        result.wall_seconds = st["wall_before"] + time.time() - t_start
        result.audio_seconds_per_second = st["audio_seconds"] / max(st["train_seconds"], 1e-9)
        if st["best_epoch"] > 0 and result.status not in ("interrupted",):
            best = torch.load(self.out / "best.pt", map_location=self.device, weights_only=False)
            result.best_epoch, result.dev_wer, result.dev_cer = best["epoch"], best["dev_wer"], best["dev_cer"]
            if "test" in self.caches and result.status not in ("pruned", "diverged", "oom"):  # not worth the time
                self.model.load_state_dict(best["model"])
                test, *_ = self.evaluate("test")
                result.test_wer, result.test_cer = test.wer, test.cer
        tmp = self.out / ".result.json.tmp"
        tmp.write_text(json.dumps(asdict(result), indent=1))
        os.replace(tmp, self.out / "result.json")
        log.info("run %s: %s%s -> %s", result.status, f"dev WER {100 * result.dev_wer:.1f}% " if result.dev_wer is not None else "",
                 f"test WER {100 * result.test_wer:.1f}%" if result.test_wer is not None else "", self.out)  # fmt: skip
        return result


@torch.no_grad()
def evaluate(model, cache: FeatureCache, tokenizer: LetterTokenizer, device, batch_frames: int,
             autocast=None) -> tuple[Scores, list[str], list[str], list[str]]:  # fmt: skip
    data = FeatureDataset(cache, tokenizer)
    sampler = FrameBudgetBatchSampler(cache.frames, batch_frames, shuffle=False)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate)
    was = model.training
    model.eval()
    hyps = [""] * len(data)
    for feats, feat_lens, _, _, idx in loader:
        ctx = autocast() if autocast else torch.autocast(device.type, enabled=False)
        with ctx:
            logits, out_lens = model(feats.to(device), feat_lens.to(device))
        for i, ids in zip(idx.tolist(), greedy_decode(logits.float(), out_lens, tokenizer.blank)):
            hyps[i] = tokenizer.decode(ids)
    model.train(was)
    refs = [tokenizer.decode(t) for t in data.targets]  # normalised references
    ids = [u["id"] for u in cache.utterances]
    return score(refs, hyps), ids, refs, hyps


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
    for name in ("config.yaml", "tokenizer.json", "frontend.json", f"{which}.pt"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir}: not a trained run directory (missing {name})")
    run = load_run_config(run_dir / "config.yaml")
    tok = LetterTokenizer.load(run_dir / "tokenizer.json")
    fe = json.loads((run_dir / "frontend.json").read_text())
    dev = pick_device(device)
    model = STTModel(run.layers, input_size=fe["feature_size"], input_proj=run.input_proj, output_size=len(tok),
                     residual=run.residual).to(dev)  # fmt: skip
    state = torch.load(run_dir / f"{which}.pt", map_location=dev, weights_only=False)
    model.load_state_dict(state["model"])
    model.eval()
    result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else None
    return LoadedRun(model, run, tok, fe, result)
