"""Batches from the feature cache: length buckets filled to a frame budget.

A fixed batch size wastes either memory (long utterances) or throughput (short
ones). Batches here are filled up to ``max_frames`` padded input frames
(``batch_size * longest``): utterances are sorted by length, cut into batches
that fit, and the batch order is shuffled per epoch with ``seed + epoch``, so a
run is reproducible and resumable at any batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from stt.features import FeatureCache
from stt.text import LetterTokenizer


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


def collate(batch):
    """-> ``(feats [B, T, F], feat_lens [B], targets [B, L], target_lens [B], indices [B])``."""
    feats, targets, idx = zip(*batch)
    feat_lens = torch.tensor([f.shape[0] for f in feats])
    target_lens = torch.tensor([t.shape[0] for t in targets])
    feats = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)  # [B, T, F], zero padded
    targets = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True)  # [B, L]
    return feats, feat_lens, targets, target_lens, torch.tensor(idx)


def make_loader(cache: FeatureCache, max_frames: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                tokenizer: LetterTokenizer | None = None) -> torch.utils.data.DataLoader:  # fmt: skip
    ds = FeatureDataset(cache, tokenizer)
    sampler = FrameBudgetBatchSampler(cache.frames, max_frames, shuffle=shuffle, seed=seed)
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                                       persistent_workers=num_workers > 0)  # fmt: skip
