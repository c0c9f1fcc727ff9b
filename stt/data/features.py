"""The feature cache: frontend features computed once per (corpus split, frontend).

Layout, under ``DATA/.stt-cache/``::

    <split>-<manifest hash>-<frontend identity>/
        shard_00000.npy   float16 [frames, F], utterances back to back
        shard_00000.json  the ids and frame counts in that shard
        ...
        index.json        written last: its presence means "complete"

* Computed once: ``prepare`` returns at once when ``index.json`` exists and
  every shard checks out; no frontend is even built.
* Interrupted runs resume: shards are written to a temporary name and renamed,
  so a shard on disk is whole; a later call keeps the shards that check out and
  computes the rest. A truncated or mismatching shard is rebuilt.
* Each shard is written under its own lock and the index under the split's, so
  two processes preparing the same cache, or the N parts of it that a job
  array's tasks prepare side by side (``part``, ``stt prepare features --shard
  I/N``), never compute a shard twice; whoever finds every shard done writes
  the index, and the cache is byte for byte the one a single process writes.
* Read back by memory map: a 100-hour corpus never has to fit in RAM.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stt.core.device import pick_device
from stt.core.errors import DataError
from stt.core.files import TMP_PREFIX, atomic_path, locked, make_dir, write_text
from stt.data.audio import AudioError, read_audio
from stt.data.corpus import CACHE_DIR, MAX_SECONDS, Skipped, Utterance, find_splits, manifest_hash, read_split
from stt.data.frontends import Frontend, build_frontend, frontend_identity
from stt.data.text import LetterTokenizer, TextError

log = logging.getLogger(__name__)
SHARD_SECONDS = 1800.0  # audio per shard: ~29 MB of 80-d fbank in float16


@dataclass
class PrepareReport:
    split: str
    cache_dir: Path
    kept: int
    skipped: list[Skipped]
    hours: float
    computed: int  # utterances run through the frontend by this call (0: the cache was complete)
    part: tuple[int, int] | None = None  # (i, n): this call prepared the i-th of n parts (kept counts those)
    complete: bool = True  # whether the whole split's cache is ready (a part's: once every part has run)


def _plan_shards(utts: list[Utterance]) -> list[list[Utterance]]:
    shards, cur, secs = [], [], 0.0
    for u in utts:
        if cur and secs + u.duration > SHARD_SECONDS:
            shards.append(cur)
            cur, secs = [], 0.0
        cur.append(u)
        secs += u.duration
    if cur:
        shards.append(cur)
    return shards


def _shard_ok(cache: Path, k: int, ids: list[str], feature_size: int) -> bool:
    npy, meta = cache / f"shard_{k:05d}.npy", cache / f"shard_{k:05d}.json"
    if not npy.exists() or not meta.exists():
        return False
    try:
        m = json.loads(meta.read_text())
        arr = np.load(npy, mmap_mode="r")
    except (ValueError, OSError, json.JSONDecodeError):
        return False  # truncated or corrupt
    return m["ids"] == ids and arr.shape == (sum(m["frames"]), feature_size) and arr.dtype == np.float16


def _complete(cache: Path, shards: list[list[Utterance]], feature_size: int) -> bool:
    """Whether every planned shard is on disk, whole and for the same utterances."""
    return all(_shard_ok(cache, k, [u.id for u in shard], feature_size) for k, shard in enumerate(shards))


def cache_dir_for(data_dir: str | Path, split: str, utts: list[Utterance], identity: str) -> Path:
    return Path(data_dir) / CACHE_DIR / f"{split}-{manifest_hash(utts, data_dir)}-{identity}"


def prepare_split(
    data_dir: str | Path,
    split: str,
    frontend: Frontend | str = "fbank",
    progress: bool = True,
    device: str | None = None,
    max_seconds: float = MAX_SECONDS,
    part: tuple[int, int] | None = None,
) -> PrepareReport:
    """Compute (or find) the feature cache of one split.

    ``frontend`` is a spec or a built Frontend; a neural one given as a spec runs on ``device``
    (default: CUDA when available). Recordings longer than ``max_seconds`` are skipped and named.

    ``part=(i, n)``: compute only the cache's shards ``k`` with ``k % n == i``, so that ``n`` processes (a job
    array's tasks) prepare one corpus side by side; whichever finds every shard done writes the index. The
    result is the cache one process would have written, byte for byte.
    """
    data_dir = Path(data_dir)
    encodable, skipped, identity = _usable(data_dir, split, frontend, max_seconds)
    cache = cache_dir_for(data_dir, split, encodable, identity)
    hours = sum(u.duration for u in encodable) / 3600
    shards = _plan_shards(encodable)
    mine = [k for k in range(len(shards)) if part is None or k % part[1] == part[0]]
    index = cache / "index.json"
    with locked(_split_lock(cache)):  # the index is read, judged and written under the split's lock
        for orphan in cache.glob(f"{TMP_PREFIX}*-index.json"):  # a killed writer's index
            orphan.unlink(missing_ok=True)
        if index.exists():
            idx = json.loads(index.read_text())
            if _complete(cache, shards, idx["feature_size"]):
                return PrepareReport(split, cache, len(idx["utterances"]), skipped, hours, 0, part)
            log.warning("%s: a shard is truncated or changed; rebuilding what is missing", cache)
            index.unlink()
    if not encodable:
        return PrepareReport(split, cache, 0, skipped, 0.0, 0, part)
    if isinstance(frontend, str):
        frontend = build_frontend(frontend, str(pick_device(device)))
    make_dir(cache)
    # each shard under its own lock: the parts (and a whole run beside them) never write one shard twice at once
    computed = _compute_shards(cache, split, shards, mine, frontend, skipped, progress)
    with locked(_split_lock(cache)):  # whoever finds every shard done writes the index, once
        done = _complete(cache, shards, frontend.feature_size)
        if done and not index.exists():
            _write_index(cache, split, identity, frontend, hours, shards)
    if part is None:
        kept = len(json.loads(index.read_text())["utterances"]) if done else 0
    else:
        kept = sum(n > 0 for k in mine for n in json.loads((cache / f"shard_{k:05d}.json").read_text())["frames"])
    return PrepareReport(split, cache, kept, skipped, hours, computed, part, done)


def _split_lock(cache: Path) -> Path:
    return cache.with_name(cache.name + ".lock")


def _compute_shards(
    cache: Path, split: str, shards: list, mine: list[int], frontend: Frontend, skipped: list, progress: bool
) -> int:
    """Compute shards ``mine`` that are not on disk yet, each under its own lock; utterances computed."""
    from tqdm import tqdm

    computed = 0
    off = None if progress else True  # None: off when not a terminal
    with tqdm(total=sum(len(shards[k]) for k in mine), unit="utt", desc=f"features {split}", disable=off) as bar:
        for k in mine:
            with locked(cache / f"shard_{k:05d}.lock"):
                for orphan in cache.glob(f"{TMP_PREFIX}*-shard_{k:05d}.*"):  # a killed writer's; none runs now
                    orphan.unlink(missing_ok=True)
                if not _shard_ok(cache, k, [u.id for u in shards[k]], frontend.feature_size):
                    feats, bad = _compute(shards[k], frontend)
                    skipped.extend(bad)
                    _write_shard(cache, k, feats, frontend.feature_size)
                    computed += len(shards[k])
            bar.update(len(shards[k]))
    return computed


def _write_index(cache: Path, split: str, identity: str, frontend: Frontend, hours: float, shards: list) -> list:
    """Write the index (last: its presence means "complete") from every shard's metadata; its rows."""
    rows = []
    for k, shard in enumerate(shards):
        meta = json.loads((cache / f"shard_{k:05d}.json").read_text())
        offset = 0
        for u, n in zip(shard, meta["frames"]):
            if n > 0:  # 0 frames: unreadable audio, skipped
                rows.append(
                    {"id": u.id, "shard": k, "offset": offset, "frames": n, "duration": u.duration, "text": u.text}
                )
            offset += n
    info = {
        "split": split,
        "frontend": identity,
        "feature_size": frontend.feature_size,
        "frames_per_second": frontend.frames_per_second,
        "hours": hours,
        "utterances": rows,
    }
    write_text(cache / "index.json", json.dumps(info))
    return rows


def _usable(
    data_dir: Path, split: str, frontend: Frontend | str, max_seconds: float
) -> tuple[list[Utterance], list[Skipped], str]:
    """A split's utterances that can be featurised and spelt (by id), those skipped, and the frontend's identity."""
    splits = find_splits(data_dir)
    if split not in splits:
        from stt.data.corpus import CorpusError

        raise CorpusError(f"{data_dir}: split '{split}' not found; available: {', '.join(sorted(splits)) or 'none'}")
    utts, skipped = read_split(splits[split], max_seconds)
    tok = LetterTokenizer()
    encodable = []
    for u in sorted(utts, key=lambda u: u.id):
        try:
            tok.encode(u.text, u.id)
            encodable.append(u)
        except TextError as e:
            skipped.append(Skipped(u.path, str(e)))
    identity = frontend.identity if isinstance(frontend, Frontend) else frontend_identity(frontend)
    return encodable, skipped, identity


class SplitFeatures:
    """The read side of one split's features, wherever they are: ``utterances`` (as in a cache's index: id,
    frames, duration, text) and ``features(i)``."""

    utterances: list[dict]

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def frames(self) -> list[int]:
        return [u["frames"] for u in self.utterances]

    @property
    def hours(self) -> float:
        return sum(u["duration"] for u in self.utterances) / 3600


class MemoryFeatures(SplitFeatures):
    """A split's features computed in memory, with :class:`FeatureCache`'s read side: for commands that only read."""

    def __init__(self, split: str, frontend: Frontend, rows: list[dict], feats: list[np.ndarray]):
        self.dir = None  # nothing on disk
        self.split = split
        self.frontend = frontend.identity
        self.feature_size = frontend.feature_size
        self.frames_per_second = frontend.frames_per_second
        self.utterances = rows  # as in a cache's index: id, frames, duration, text
        self._feats = feats

    def features(self, i: int) -> np.ndarray:
        """``[T, F]`` float16."""
        return self._feats[i]


def read_only_split(
    data_dir: str | Path, split: str, frontend: str = "fbank", device: str | None = None, progress: bool = True
) -> FeatureCache | MemoryFeatures:
    """A split for a command that only reads (``stt eval``): its prepared cache when that is complete, else
    its features computed in memory. Creates no file or folder, so it works on a read-only data folder too."""
    from tqdm import tqdm

    data_dir = Path(data_dir)
    encodable, _, identity = _usable(data_dir, split, frontend, MAX_SECONDS)
    cache = cache_dir_for(data_dir, split, encodable, identity)
    index = cache / "index.json"
    if index.exists():
        try:
            idx = json.loads(index.read_text())
            shards = _plan_shards(encodable)
            if _complete(cache, shards, idx["feature_size"]):
                return FeatureCache(cache)
        except (OSError, ValueError, KeyError):
            pass  # being rewritten: compute it here
    fe = build_frontend(frontend, str(pick_device(device)))
    log.info(
        "%s: no prepared features for split '%s'; computing them in memory (`stt prepare features` keeps them)",
        data_dir,
        split,
    )
    rows, feats = [], []
    for u in tqdm(encodable, unit="utt", desc=f"features {split}", disable=None if progress else True):
        try:
            f = fe(read_audio(u.path)).numpy().astype(np.float16)  # [T, F]
        except AudioError:
            continue  # skipped, as a cache would skip it
        rows.append({"id": u.id, "frames": len(f), "duration": u.duration, "text": u.text})
        feats.append(f)
    if not rows:
        from stt.data.corpus import CorpusError

        raise CorpusError(f"{data_dir}: split '{split}' has no usable utterances")
    return MemoryFeatures(split, fe, rows, feats)


def _compute(shard: list[Utterance], frontend: Frontend) -> tuple[list, list[Skipped]]:
    feats, bad = [], []
    for u in shard:
        try:
            f = frontend(read_audio(u.path)).numpy().astype(np.float16)  # [T, F]
        except AudioError as e:
            bad.append(Skipped(u.path, str(e)))
            f = np.zeros((0, frontend.feature_size), np.float16)
        feats.append((u.id, f))
    return feats, bad


def _write_shard(cache: Path, k: int, feats: list, feature_size: int) -> None:
    total = sum(f.shape[0] for _, f in feats)
    npy, meta = cache / f"shard_{k:05d}.npy", cache / f"shard_{k:05d}.json"
    with atomic_path(npy) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(max(total, 0), feature_size))
        off = 0
        for _, f in feats:
            arr[off : off + len(f)] = f
            off += len(f)
        arr.flush()
        del arr
        # the metadata goes first: a shard file is only trusted beside metadata that matches its shape
        write_text(meta, json.dumps({"ids": [i for i, _ in feats], "frames": [len(f) for _, f in feats]}))


class FeatureCache(SplitFeatures):
    """Read side of a prepared split: memory-mapped features, transcripts, lengths."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        index = self.dir / "index.json"
        if not index.exists():
            raise DataError(f"{self.dir}: no complete feature cache (run `stt prepare features`)")
        info = json.loads(index.read_text())
        self.split = info["split"]
        self.frontend = info["frontend"]
        self.feature_size = info["feature_size"]
        self.frames_per_second = info["frames_per_second"]
        self.utterances = info["utterances"]
        self._shards: dict[int, np.ndarray] = {}

    def features(self, i: int) -> np.ndarray:
        """``[T, F]`` float16 view into the memory-mapped shard."""
        u = self.utterances[i]
        if u["shard"] not in self._shards:  # opened lazily: DataLoader workers each map their own
            self._shards[u["shard"]] = np.load(self.dir / f"shard_{u['shard']:05d}.npy", mmap_mode="r")
        return self._shards[u["shard"]][u["offset"] : u["offset"] + u["frames"]]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_shards"] = {}
        return state


def prepare_features(
    data_dir: str | Path,
    frontend: str = "fbank",
    splits: list[str] | None = None,
    progress: bool = True,
    device: str | None = None,
    max_seconds: float = MAX_SECONDS,
    part: tuple[int, int] | None = None,
) -> list[PrepareReport]:
    """Prepare every split (or those named) of a data folder with one frontend (``part``: see
    :func:`prepare_split`)."""
    found = find_splits(data_dir)
    if not found:
        from stt.data.corpus import CorpusError

        raise CorpusError(
            f"{data_dir}: no LibriSpeech-layout split folders (*.trans.txt) or SPLIT.tsv/.jsonl manifests"
        )
    names = splits or sorted(found)
    reports = []
    for name in names:
        if name not in found:
            from stt.data.corpus import CorpusError

            raise CorpusError(f"split '{name}' not found in {data_dir}; available: {', '.join(sorted(found))}")
        rep = prepare_split(
            data_dir, name, frontend, progress=progress, device=device, max_seconds=max_seconds, part=part
        )
        reports.append(rep)
    return reports


def open_split(
    data_dir: str | Path,
    split: str,
    frontend: str = "fbank",
    prepare: bool = True,
    progress: bool = True,
    device: str | None = None,
) -> FeatureCache:
    """The cache of one split, preparing it first if needed (and saying so)."""
    rep = prepare_split(data_dir, split, frontend, progress=progress, device=device) if prepare else None
    if rep is not None and rep.computed:
        log.info("prepared features for %s: %d utterances -> %s", split, rep.kept, rep.cache_dir)
    if rep is not None and rep.kept == 0:
        from stt.data.corpus import CorpusError

        raise CorpusError(f"{data_dir}: split '{split}' has no usable utterances")
    return FeatureCache(rep.cache_dir)
