"""The train/dev/test features of one data folder, opened once.

A training run, an evaluation and every trial of a study read the same
prepared caches; opening them (and preparing them on first use) happens here,
outside the trainer, so that a worker opens a corpus once and trains many
models on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from stt.data.corpus import find_splits, resolve_split
from stt.data.features import FeatureCache, open_split
from stt.data.text import LetterTokenizer

log = logging.getLogger(__name__)
ROLES = ("train", "dev", "test")


@dataclass
class TrainingData:
    data_dir: Path  # the data folder
    frontend: str  # the frontend spec the caches were made with ("fbank", "wav2vec:CKPT")
    split_names: dict  # role ("train", "dev", "test") -> split name; test may be None
    caches: dict  # role -> FeatureCache (roles without a split are absent)
    tokenizer: LetterTokenizer  # the letters every role is encoded with

    @property
    def train(self) -> FeatureCache:
        return self.caches["train"]

    @property
    def feature_size(self) -> int:
        return self.train.feature_size

    @property
    def frames_per_second(self) -> float:
        return self.train.frames_per_second

    def where(self) -> dict:
        """Plain, picklable data that opens these prepared caches again (:func:`reopen`) without the audio."""
        return {
            "data_dir": str(self.data_dir),
            "frontend": self.frontend,
            "split_names": dict(self.split_names),
            "caches": {role: str(cache.dir) for role, cache in self.caches.items()},
        }


def open_training_data(
    data_dir: str | Path,
    frontend: str = "fbank",
    splits: dict | None = None,
    progress: bool = True,
    device: str | None = None,
) -> TrainingData:
    """Resolve the train/dev(/test) splits of ``data_dir`` and open their feature caches.

    Args:
        splits: role -> split name overrides (default: the split named or prefixed like the role).
        device: where a neural frontend computes missing features (default: CUDA when available).
    Raises ``CorpusError``/``FrontendError`` with one line naming the folder, split or frontend.
    """
    data_dir = Path(data_dir)
    found = find_splits(data_dir)
    splits = splits or {}
    names = {r: resolve_split(found, r, splits.get(r)) for r in ("train", "dev")}
    try:
        names["test"] = resolve_split(found, "test", splits.get("test"))
    except ValueError:
        if splits.get("test"):  # named but missing: the user's mistake, not an optional split
            raise
        names["test"] = None
    caches = {r: open_split(data_dir, s, frontend, progress=progress, device=device) for r, s in names.items() if s}
    return TrainingData(data_dir, frontend, names, caches, LetterTokenizer())


def reopen(where: dict) -> TrainingData:
    """Caches that :func:`open_training_data` prepared and checked, opened again from their folders.

    Reads each cache's index only: no audio file, no shard and no transcript file is touched, so a search's trial
    starts in the same time on a corpus of 3 k files as on one of 300 k. ``where``: :meth:`TrainingData.where`.
    """
    caches = {role: FeatureCache(folder) for role, folder in where["caches"].items()}
    names = dict(where["split_names"])
    return TrainingData(Path(where["data_dir"]), where["frontend"], names, caches, LetterTokenizer())
