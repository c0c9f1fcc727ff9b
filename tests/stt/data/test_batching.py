"""Batches: bucketed padding and the background prefetcher."""

import threading

import pytest
import torch

from stt.data.batching import Prefetcher, bucket_length, collate


def test_bucket_lengths_are_few_and_pad_at_most_a_quarter():
    buckets = {bucket_length(t, 4) for t in range(64, 4097)}
    assert len(buckets) == 4 * 6 + 1  # 4 per octave over 64..4096
    for t in range(1, 5000):
        b = bucket_length(t, 4)
        assert t <= b <= max(t, 1.25 * t) and bucket_length(b, 4) == b
    assert bucket_length(100, 0) == 100


def test_collate_pads_to_the_bucket_and_keeps_real_lengths():
    items = [(torch.ones(t, 3), torch.tensor([1, 2]), i) for i, t in enumerate([70, 100])]
    b = collate(items, buckets_per_octave=4)
    assert b.feats.shape == (2, 112, 3) and b.feat_lens.tolist() == [70, 100]
    assert b.feats[1, 100:].abs().sum() == 0


def test_prefetcher_yields_everything_in_order_on_another_thread():
    seen = []

    def transform(x):
        seen.append(threading.current_thread().name)
        return x * 2

    assert list(Prefetcher(range(50), transform, depth=3)) == [2 * i for i in range(50)]
    assert set(seen) == {"stt-prefetch"}


def test_prefetcher_raises_the_loaders_error_in_the_consumer():
    def loader():
        yield 1
        raise ValueError("shard 3 is truncated")

    it = iter(Prefetcher(loader()))
    assert next(it) == 1
    with pytest.raises(ValueError, match="shard 3 is truncated"):
        next(it)


def test_leaving_the_loop_early_stops_the_thread():
    produced = []

    def loader():
        for i in range(10_000):
            produced.append(i)
            yield i

    for i in Prefetcher(loader(), depth=2):
        if i == 5:
            break
    assert not any(t.name == "stt-prefetch" for t in threading.enumerate())
    assert len(produced) < 20  # it stopped reading ahead, instead of draining the loader
