"""A trained run directory: what the trainer writes beside its checkpoints, and the model loaded back from it.

A run directory is self-contained::

    RUN_DIR/
      config.yaml      the run config (layers + training settings + frontend)
      tokenizer.json   the letters
      frontend.json    frontend spec, identity, feature size, frame rate, the splits it trained on
      last.pt          full training state after the last checkpoint (the resume point)
      best.pt          weights of the epoch with the best dev WER
      metrics.jsonl    one line per finished epoch
      result.json      the final status and scores
      decoder.json     the beam decoder's tuned settings (``stt tune-decoder``), when there are any

``stt eval``, ``stt transcribe``, ``stt tune-decoder`` and a search's beam rescoring read it through
:func:`load_run`; nothing here trains.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from stt.core.checkpoint import load_checkpoint
from stt.core.device import model_device, pick_device
from stt.core.errors import CheckpointError
from stt.core.files import locked, make_dir, write_text
from stt.data.features import FeatureCache, MemoryFeatures, open_split, read_only_split
from stt.data.text import LetterTokenizer
from stt.data.training_data import TrainingData
from stt.model.layer_config import LayerConfig
from stt.model.network import STTModel, build_model
from stt.train.evaluation import Evaluator
from stt.train.run_config import RunConfig, load_run_config

CONFIG, TOKENIZER, FRONTEND = "config.yaml", "tokenizer.json", "frontend.json"
LAST, BEST, METRICS, RESULT = "last.pt", "best.pt", "metrics.jsonl", "result.json"


def write_description(out: Path, run: RunConfig, data: TrainingData) -> None:
    """The files that say what a run is (config, letters, frontend): what :func:`load_run` needs beside weights."""
    make_dir(out)
    run.save(out / CONFIG)
    data.tokenizer.save(out / TOKENIZER)
    train = data.train
    frontend = {
        "spec": run.frontend,
        "identity": train.frontend,
        "feature_size": train.feature_size,
        "frames_per_second": train.frames_per_second,
        "splits": data.split_names,
    }
    write_text(out / FRONTEND, json.dumps(frontend, indent=1))


@dataclass
class LoadedRun:
    model: STTModel  # in eval mode, on the device asked for
    run: RunConfig  # the run config it was trained from
    tokenizer: LetterTokenizer  # its letters
    frontend: dict  # frontend.json: spec, identity, feature_size, frames_per_second, splits
    result: dict | None  # result.json, when the run finished

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def features(self, data_dir: str | Path, split: str, write: bool = True) -> FeatureCache | MemoryFeatures:
        """A split of a data folder through this run's frontend: prepared first if needed, or with ``write=False``
        read from a complete cache or else computed in memory (a read-only command creates nothing)."""
        if not write:
            return read_only_split(data_dir, split, self.frontend["spec"], device=str(self.device))
        return open_split(data_dir, split, self.frontend["spec"], device=str(self.device))

    def evaluator(self) -> Evaluator:
        """Scores this model as its run did: the run's batch budget and precision."""
        train = self.run.train
        return Evaluator(self.model, self.tokenizer, self.device, train.batch_frames, train.precision)


def load_run(run_dir: str | Path, which: str = "best", device: str | None = None) -> LoadedRun:
    """A trained run directory -> its model (``which``: ``best`` or ``last`` weights) with config, letters, frontend."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    for name in (CONFIG, TOKENIZER, FRONTEND, f"{which}.pt"):
        if not (run_dir / name).exists():
            raise CheckpointError(f"{run_dir}: not a trained run directory (missing {name})")
    state = load_checkpoint(run_dir / f"{which}.pt", keys=("model",))  # first: the file that travels most
    run = load_run_config(run_dir / CONFIG)
    tok = LetterTokenizer.load(run_dir / TOKENIZER)
    fe = _read_json(run_dir / FRONTEND, ("spec", "feature_size"))
    result = _read_json(run_dir / RESULT, ()) if (run_dir / RESULT).exists() else None
    model = build_model(run, fe["feature_size"], len(tok)).to(pick_device(device))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{run_dir / f'{which}.pt'}: weights do not fit {run_dir / CONFIG} ({str(e).splitlines()[0][:160]})"
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


def grown_weights(run_dir: str | Path, morphs: list, which: str = "best") -> tuple[LayerConfig, dict]:
    """A trained run's model grown by ``morphs`` (plain data, :func:`stt.model.morph.from_dict`): the child's
    layer config and weights, which compute what the run's ``which`` weights compute (on the CPU)."""
    from stt.model.morph import from_dict, grow

    parent = load_run(run_dir, which=which, device="cpu")
    cfg, child = grow(parent.model.config, parent.model, [from_dict(m) for m in morphs])
    return cfg, child.state_dict()


LOCK = ".lock"  # in a run directory while a process trains there; names its holder (host:pid)


class RunDirBusy(CheckpointError):
    """Another live process trains in this run directory."""


def run_dir_holder(run_dir: str | Path) -> str | None:
    """Who trains in a run directory now (``host:pid``, as its lock names it), or None when no live process does.

    A lock file whose holder died is not held (a flock dies with its process); it is removed here.
    """
    lock = Path(run_dir) / LOCK
    if not lock.exists():
        return None
    try:
        with locked(lock, wait=False):
            return None
    except BlockingIOError:
        try:
            return lock.read_text().strip() or "unknown"
        except OSError:
            return "unknown"


@contextlib.contextmanager
def hold_run_dir(run_dir: str | Path):
    """An exclusive lock on a run directory for as long as a process trains in it.

    Two ``stt train --out`` at once, or a stale-heartbeat re-queue that starts a copy of a trial while its
    first worker still lives (a network partition): the second must not write the same checkpoints, so it
    stops at once, naming the folder and the holder. The lock goes with its holder on every exit, a signal
    included (a flock dies with its process; the file is removed on the way out). A folder this call made
    is removed again if nothing was written in it.
    """
    run_dir = Path(run_dir)
    made = not run_dir.exists()
    lock = run_dir / LOCK
    held = contextlib.ExitStack()
    try:
        fd = held.enter_context(locked(lock, wait=False))
    except BlockingIOError:
        try:
            holder = lock.read_text().strip()
        except OSError:
            holder = ""
        raise RunDirBusy(
            f"run directory {run_dir} is in use by another training process ({holder or 'unknown'})"
        ) from None
    except OSError as e:  # a read-only or foreign folder: one line, as any unwritable output
        raise CheckpointError(f"{run_dir}: cannot write ({e.strerror or e})") from None
    try:
        with held:
            os.write(fd, f"{socket.gethostname()}:{os.getpid()}\n".encode())
            yield
    finally:
        if made:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty: a run that wrote nothing leaves nothing
