"""Corpus readers: audio files and transcripts on disk -> one manifest per split.

Two layouts are read:

* OpenSLR / LibriSpeech: ``SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac`` with
  ``SPEAKER-CHAPTER.trans.txt`` beside them. Split folders may sit at any depth
  under the data folder (``LibriSpeech/train-clean-100``, ``dev-clean``, …);
  a split is named by its folder's name.
* A plain manifest, ``SPLIT.tsv`` (``path<TAB>transcript`` per line) or
  ``SPLIT.jsonl`` (``{"path": ..., "text": ..., "id": optional}``), paths
  relative to the manifest, for any other corpus.

Problems are collected, not raised one by one: a reader returns what it kept
and a list of ``Skipped(path, reason)`` so ``prepare`` can report counts and
name every file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from stt.core.errors import DataError
from stt.core.files import read_user_text
from stt.data.audio import AudioError, audio_duration

AUDIO_EXTS = (".flac", ".wav", ".ogg", ".mp3")
CACHE_DIR = ".stt-cache"  # lives inside the data folder; never scanned as a split


@dataclass(frozen=True)
class Utterance:
    id: str
    path: str  # absolute path of the audio file
    duration: float  # seconds
    text: str  # transcript as written (normalised by the tokenizer later)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class CorpusError(DataError):
    """A data folder or manifest that cannot be read (the message names it)."""


def find_splits(data_dir: str | Path) -> dict[str, Path]:
    """Map split name -> folder (LibriSpeech layout) or manifest file, found under ``data_dir``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CorpusError(f"{data_dir}: no such data folder")
    splits: dict[str, Path] = {}
    seen: set[str] = set()  # real folders walked: symlinks are followed (a split of linked corpora), loops are not
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d != CACHE_DIR and not d.startswith("."))
        if any(f.endswith(".trans.txt") for f in files):
            split_dir = Path(root).parent.parent  # SPLIT/SPEAKER/CHAPTER
            _add_split(splits, split_dir.name, split_dir)
            dirs[:] = []
    for f in sorted(data_dir.iterdir()):
        if f.suffix in (".tsv", ".jsonl") and f.is_file():
            _add_split(splits, f.stem, f)
    return splits


def _add_split(splits, name, where):
    if name in splits and splits[name] != where:
        raise CorpusError(f"split '{name}' found twice: {splits[name]} and {where}")
    splits[name] = where


def resolve_split(splits: dict[str, Path], role: str, name: str | None = None) -> str:
    """Pick the split for a role ('train', 'dev', 'test'): the given name, the exact role, or one prefixed by it."""
    if name is not None:
        if name not in splits:
            raise CorpusError(f"split '{name}' not found; available: {', '.join(sorted(splits)) or 'none'}")
        return name
    if role in splits:
        return role
    cands = sorted(s for s in splits if s.startswith(role))
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise CorpusError(
            f"no {role} split found (available: {', '.join(sorted(splits)) or 'none'}); name one with --{role}-split"
        )
    raise CorpusError(f"several {role} splits ({', '.join(cands)}); choose one with --{role}-split")


MAX_SECONDS = 60.0  # longer recordings are skipped and named: one file must not hold the whole memory


def read_split(where: Path, max_seconds: float = MAX_SECONDS) -> tuple[list[Utterance], list[Skipped]]:
    if where.is_dir():
        return read_librispeech(where, max_seconds)
    return read_manifest(where, max_seconds)


def read_librispeech(split_dir: str | Path, max_seconds: float = MAX_SECONDS) -> tuple[list[Utterance], list[Skipped]]:
    """Read one LibriSpeech-layout split folder."""
    split_dir = Path(split_dir)
    kept, skipped = [], []
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        folder = trans.parent
        audio = {p.stem: p for p in folder.iterdir() if p.suffix in AUDIO_EXTS}
        seen = set()
        for lineno, line in enumerate(read_user_text(trans, CorpusError).splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            seen.add(utt_id)
            where = f"{trans}:{lineno}"
            if utt_id not in audio:
                skipped.append(Skipped(where, f"transcript for {utt_id} has no audio file"))
                continue
            _keep(kept, skipped, utt_id, audio[utt_id], text, where, max_seconds)
        for stem, p in sorted(audio.items()):
            if stem not in seen:
                skipped.append(Skipped(str(p), f"audio has no transcript line in {trans.name}"))
    return kept, skipped


def read_manifest(path: str | Path, max_seconds: float = MAX_SECONDS) -> tuple[list[Utterance], list[Skipped]]:
    """Read a TSV (``path<TAB>transcript``) or JSONL (``{"path", "text", "id"?}``) manifest."""
    path = Path(path)
    kept, skipped = [], []
    for lineno, line in enumerate(read_user_text(path, CorpusError).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                audio, text = row["path"], row.get("text", row.get("transcript"))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CorpusError(f"{where}: expected a JSON object with 'path' and 'text' ({e})") from None
            utt_id = row.get("id")
        else:
            if "\t" not in line:
                raise CorpusError(f"{where}: expected 'path<TAB>transcript'")
            audio, text = line.split("\t", 1)
            utt_id = None
        audio_path = (path.parent / audio).resolve()
        _keep(kept, skipped, utt_id or audio_path.stem, audio_path, text, where, max_seconds)
    ids = [u.id for u in kept]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CorpusError(f"{path}: utterance id '{dup}' appears twice (give each line a unique 'id')")
    return kept, skipped


def _keep(kept, skipped, utt_id, audio_path: Path, text, where, max_seconds: float = MAX_SECONDS) -> None:
    if text is None or not str(text).strip():
        skipped.append(Skipped(where, f"empty transcript for {utt_id}"))
        return
    try:
        duration = audio_duration(audio_path)
    except AudioError as e:
        skipped.append(Skipped(where, str(e)))
        return
    if duration <= 0:
        skipped.append(Skipped(str(audio_path), "zero-length audio"))
        return
    if duration > max_seconds:  # the header says how long it is: the audio itself is never read
        skipped.append(
            Skipped(str(audio_path), f"{duration:,.0f} s of audio, over the {max_seconds:g} s cap (--max-seconds)")
        )
        return
    kept.append(Utterance(utt_id, str(Path(audio_path).resolve()), duration, str(text).strip()))


def manifest_hash(utts: list[Utterance], root: str | Path) -> str:
    """Identity of a split's content: ids, paths relative to ``root``, file sizes and transcripts."""
    h = hashlib.sha256()
    for u in sorted(utts, key=lambda u: u.id):
        rel = os.path.relpath(u.path, root)
        h.update(json.dumps([u.id, rel, os.path.getsize(u.path), u.text]).encode())
    return h.hexdigest()[:16]


def write_manifest_jsonl(utts: list[Utterance], path: str | Path) -> None:
    from stt.core.files import write_text

    write_text(path, "".join(json.dumps(asdict(u)) + "\n" for u in utts))
