"""Batches from the feature cache: length buckets filled to a frame budget.

A fixed batch size wastes either memory (long utterances) or throughput (short
ones). Batches here are filled up to ``max_frames`` padded input frames
(``batch_size * longest``): utterances are sorted by length, cut into batches
that fit, and the batch order is shuffled per epoch with ``seed + epoch``, so a
run is reproducible and resumable at any batch.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from stt.data.features import FeatureCache
from stt.data.text import LetterTokenizer


class FeatureDataset(Dataset):
    """Item ``i``: ``(features [T, F] float32, target ids [L] long, utterance index i)``."""

    def __init__(self, cache: FeatureCache, tokenizer: LetterTokenizer | None = None):
        self.cache = cache
        self.tokenizer = tokenizer or LetterTokenizer()
        self.targets = [self.tokenizer.encode(u["text"], u["id"]) for u in cache.utterances]

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int):
        feats = torch.from_numpy(np.asarray(self.cache.features(i), dtype=np.float32))
        return feats, torch.tensor(self.targets[i], dtype=torch.long), i


def frame_budget_batches(frames: list[int], max_frames: int) -> list[list[int]]:
    """Indices sorted by length, cut so that ``len(batch) * max(frames in batch) <= max_frames``.

    An utterance longer than the budget gets a batch of its own.
    """
    order = np.argsort(np.asarray(frames), kind="stable")
    batches, cur, longest = [], [], 0
    for i in order:
        n = frames[i]
        if cur and (len(cur) + 1) * max(longest, n) > max_frames:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(int(i))
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    return batches


class FrameBudgetBatchSampler:
    """Length-bucketed batches, shuffled per epoch; ``set_epoch`` and ``start`` make it resumable."""

    def __init__(self, frames: list[int], max_frames: int, shuffle: bool = True, seed: int = 0):
        self.batches = frame_budget_batches(frames, max_frames)
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch to draw the order for, and the batch to begin at (to resume mid-epoch)."""
        self.epoch, self.start = epoch, start

    def order(self) -> list[list[int]]:
        if not self.shuffle:
            return self.batches
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches))
        return [self.batches[i] for i in perm]

    def __iter__(self):
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return len(self.batches) - self.start


class Batch(NamedTuple):
    feats: torch.Tensor  # [B, T, F] float32, zero padded
    feat_lens: torch.Tensor  # [B] real frames
    targets: torch.Tensor  # [B, L] letter ids, zero padded
    target_lens: torch.Tensor  # [B]
    index: torch.Tensor  # [B] utterance indices into the dataset


def bucket_length(frames: int, per_octave: int) -> int:
    """``frames`` rounded up to a grid of ``per_octave`` lengths per doubling (0: unchanged).

    With 4 per octave a padded length is one of 64, 80, 96, 112, 128, 160, ...: at most
    25 % padding, and a compiled model sees a few shapes instead of one per batch.
    """
    if per_octave <= 0 or frames <= 1:
        return frames
    step = 2 ** max(0, math.floor(math.log2(frames)) - int(math.log2(per_octave)))
    return -(-frames // step) * step


def collate(batch, buckets_per_octave: int = 0) -> Batch:
    """Items -> a padded :class:`Batch`; the time axis is padded up to its bucket length."""
    feats, targets, idx = zip(*batch)
    feat_lens = torch.tensor([f.shape[0] for f in feats])
    target_lens = torch.tensor([t.shape[0] for t in targets])
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)  # [B, T, F], zero padded
    extra = bucket_length(padded.size(1), buckets_per_octave) - padded.size(1)
    if extra:
        padded = torch.nn.functional.pad(padded, (0, 0, 0, extra))  # [B, T_bucket, F]
    targets = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True)  # [B, L]
    return Batch(padded, feat_lens, targets, target_lens, torch.tensor(idx))


class Prefetcher:
    """Iterate a loader on a background thread, ``depth`` batches ahead of the consumer.

    ``transform`` runs on that thread too (pinning and the host-to-device copy), so the
    device never waits for collation or a copy. Errors in the loader are raised in the
    consumer; leaving the loop early stops the thread.
    """

    _END = object()

    def __init__(self, loader: Iterable, transform: Callable | None = None, depth: int = 2):
        self.loader, self.transform, self.depth = loader, transform or (lambda b: b), depth

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        q: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def work():
            try:
                for item in self.loader:
                    if stop.is_set():
                        return
                    q.put(self.transform(item))
            except BaseException as e:  # handed to the consumer, which re-raises it with its traceback
                q.put(_Failure(e))
            q.put(self._END)

        thread = threading.Thread(target=work, name="stt-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is self._END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a worker waiting on a full queue
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def make_loader(
    cache: FeatureCache,
    max_frames: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    tokenizer: LetterTokenizer | None = None,
) -> torch.utils.data.DataLoader:
    ds = FeatureDataset(cache, tokenizer)
    sampler = FrameBudgetBatchSampler(cache.frames, max_frames, shuffle=shuffle, seed=seed)
    return torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers, persistent_workers=num_workers > 0
    )
