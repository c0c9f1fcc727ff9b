"""The feature cache: computed once, resumable after a kill, safe under concurrency; batches."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import stt.data.features as features
from stt.data.audio import read_audio
from stt.data.batching import FrameBudgetBatchSampler, collate, frame_budget_batches, make_loader
from stt.data.features import FeatureCache, open_split, prepare_features, prepare_split
from stt.data.frontends import Fbank


class CountingFbank(Fbank):
    calls = 0

    def __call__(self, wav):
        CountingFbank.calls += 1
        return super().__call__(wav)


@pytest.fixture
def corpus(tiny_corpus, tmp_path):
    """A private copy of the tiny corpus (each test owns its cache)."""
    dst = tmp_path / "c"
    shutil.copytree(tiny_corpus, dst, ignore=shutil.ignore_patterns(".stt-cache"))
    return dst


def test_computed_once_then_read_without_the_frontend(corpus, monkeypatch):
    CountingFbank.calls = 0
    first = prepare_split(corpus, "train", CountingFbank(), progress=False)
    n = CountingFbank.calls
    assert n == first.kept == first.computed > 0
    again = prepare_split(corpus, "train", CountingFbank(), progress=False)
    assert CountingFbank.calls == n and again.computed == 0 and again.cache_dir == first.cache_dir

    def boom(*a, **k):
        raise AssertionError("the frontend ran on a cached split")

    monkeypatch.setattr(Fbank, "__call__", boom)
    cache = open_split(corpus, "train", "fbank", progress=False)  # prepare finds it complete
    loader = make_loader(cache, max_frames=3000, shuffle=True, seed=1)
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        seen = sorted(i for *_, idx in loader for i in idx.tolist())
        assert seen == list(range(len(cache)))


def test_cached_features_equal_the_frontend_and_are_memory_mapped(corpus):
    rep = prepare_split(corpus, "dev", "fbank", progress=False)
    cache = FeatureCache(rep.cache_dir)
    u = cache.utterances[3]
    from stt.data.corpus import find_splits, read_librispeech

    path = {x.id: x.path for x in read_librispeech(find_splits(corpus)["dev"])[0]}[u["id"]]
    direct = Fbank()(read_audio(path)).numpy()
    got = cache.features(3)
    assert isinstance(got.base, np.memmap) or isinstance(got, np.memmap)
    np.testing.assert_allclose(got.astype(np.float32), direct, atol=2e-2)
    assert cache.feature_size == 80 and cache.frames_per_second == 100


_KILLABLE = textwrap.dedent("""
    import sys
    import stt.data.features as F
    from stt.data.frontends import Fbank
    F.SHARD_SECONDS = 3.0
    write = F._write_shard
    def write_then_report(cache, k, feats, size):
        write(cache, k, feats, size)
        print(f"shard {k} written", flush=True)
        if k == 2:
            sys.stdin.readline()  # hold here, mid-prepare, until killed
    F._write_shard = write_then_report
    F.prepare_split(sys.argv[1], "train", Fbank(), progress=False)
""")


@pytest.mark.slow
def test_killed_prepare_leaves_a_cache_the_next_call_completes(corpus, monkeypatch):
    monkeypatch.setattr(features, "SHARD_SECONDS", 3.0)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(corpus)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    for line in proc.stdout:
        if line.startswith("shard 2 written"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards = list((corpus / ".stt-cache").glob("train-*/shard_*.npy"))
    assert len(shards) == 3, "prepare did not stop after its third shard"
    assert not list((corpus / ".stt-cache").glob("train-*/index.json"))
    CountingFbank.calls = 0
    rep = prepare_split(corpus, "train", CountingFbank(), progress=False)
    assert 0 < rep.computed < rep.kept  # only the missing shards were computed
    # a truncated shard is detected and rebuilt
    victim = sorted(rep.cache_dir.glob("shard_*.npy"))[1]
    with open(victim, "r+b") as fh:
        fh.truncate(os.path.getsize(victim) // 2)
    rep2 = prepare_split(corpus, "train", CountingFbank(), progress=False)
    assert 0 < rep2.computed < rep2.kept
    cache = FeatureCache(rep2.cache_dir)
    ref = {u.id: u.path for u in __import__("stt.data.corpus", fromlist=["x"]).read_librispeech(corpus / "train")[0]}
    for i in range(0, len(cache), 7):
        direct = Fbank()(read_audio(ref[cache.utterances[i]["id"]])).numpy()
        np.testing.assert_allclose(cache.features(i).astype(np.float32), direct, atol=2e-2)


@pytest.mark.slow
def test_two_processes_preparing_at_once_do_not_corrupt(corpus):
    code = (
        "import sys, stt.data.features as F; "
        "r = F.prepare_split(sys.argv[1], 'train', 'fbank', progress=False); print(r.computed)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(corpus)], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = sorted(int(p.communicate()[0]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    total = len(FeatureCache(prepare_split(corpus, "train", "fbank", progress=False).cache_dir))
    assert outs == [0, total]


def test_prepare_features_reports_and_skips(corpus):
    (corpus / "train" / "10000" / "0" / "10000-0-0000.flac").unlink()
    reports = {r.split: r for r in prepare_features(corpus, "fbank", progress=False)}
    assert set(reports) == {"train", "dev", "test"}
    assert any("has no audio file" in str(s) for s in reports["train"].skipped)


def test_frame_budget_batches_and_sampler():
    frames = list(np.random.default_rng(0).integers(50, 400, 200))
    batches = frame_budget_batches(frames, 1000)
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert all(len(b) * max(frames[i] for i in b) <= 1000 for b in batches)
    assert frame_budget_batches([5000, 10], 1000) == [[1], [0]]  # too long: a batch of its own
    s = FrameBudgetBatchSampler(frames, 1000, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    assert list(s) != e0
    s.set_epoch(0, start=5)
    assert list(s) == e0[5:] and len(s) == len(e0) - 5


def test_collate_pads_and_keeps_lengths():
    items = [(torch.ones(5, 3), torch.tensor([1, 2]), 0), (torch.ones(2, 3), torch.tensor([3, 4, 5]), 1)]
    feats, flens, targets, tlens, idx = collate(items)
    assert feats.shape == (2, 5, 3) and flens.tolist() == [5, 2] and tlens.tolist() == [2, 3]
    assert feats[1, 2:].abs().sum() == 0 and targets.shape == (2, 3) and idx.tolist() == [0, 1]


_PART = (
    "import sys, stt.data.features as F; F.SHARD_SECONDS = 3.0; from stt.cli import main; "
    "sys.exit(main(['prepare', 'features', '--data', sys.argv[1], '--shard', sys.argv[2], '--quiet']))"
)


@pytest.mark.slow
def test_four_parts_prepared_side_by_side_equal_one_whole_run_byte_for_byte(corpus, tmp_path, monkeypatch, capsys):
    """`stt prepare features --shard I/N`, as the 4 tasks of a job array run it: at once, on one folder."""
    monkeypatch.setattr(features, "SHARD_SECONDS", 3.0)
    whole = tmp_path / "whole"
    shutil.copytree(corpus, whole)
    prepare_features(whole, progress=False)
    procs = [
        subprocess.Popen([sys.executable, "-c", _PART, str(corpus), f"{i}/4"], stdout=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert sum(o.count("the split is complete") for o in outs) >= 3  # each split, by whichever part ended last

    def files(root):
        cache = root / ".stt-cache"
        return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}

    parts, one = files(corpus), files(whole)
    assert len([n for n in one if n.startswith("train-") and n.endswith(".npy")]) >= 4  # enough shards to share
    assert parts.keys() == one.keys() and all(parts[n] == one[n] for n in one)  # no lock or temporary file left
    from stt.cli import main

    assert main(["prepare", "features", "--data", str(corpus), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(cached)") == 3 and "computed" not in printed  # the whole command finds nothing to do
    with pytest.raises(SystemExit) as bad:
        main(["prepare", "features", "--data", str(corpus), "--shard", "4/4"])
    assert bad.value.code == 2
    assert "--shard: 4/4: expected I/N with 0 <= I < N" in capsys.readouterr().err
