"""The built-in corpus: English speech synthesised offline with espeak-ng.

espeak-ng comes as a shared library inside the ``espeakng-loader`` wheel and is
driven through ctypes, so nothing is installed system-wide and nothing is
downloaded. Sentences are random word sequences from the ``--vocab N`` most
frequent English words (wordfreq). Voices are espeak variants × English accents
× speaking rate × pitch, with light white noise. Held out:

* dev and test *voice variants* are disjoint from train's, so the test set
  measures generalisation to unseen voices;
* dev and test sentences never occur in train.

Output is the LibriSpeech layout (``split/SPEAKER/CHAPTER/...flac`` at 16 kHz),
so the same reader serves it. Everything is deterministic for a seed, down to
the audio bytes and whatever the number of workers: espeak-ng keeps state in
C statics that its API cannot reset (the same text spoken twice in one process
comes out differently), so each fixed group of ``GROUP`` utterances is spoken by
a fresh child forked from a pool worker that loads espeak-ng but never speaks; and
variants with breath noise are left out, because that noise differs from one
process to the next.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stt.core.errors import ConfigError, DataError

ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
# variants whose sound is not speech-like enough to learn from (robots, croaks, whispers)
_UNUSABLE = re.compile(
    r"robo|klatt|demonic|croak|whisper|tweaky|storm|anikarobot|unirobot|gene|michel|mr serious", re.I
)
# breath noise comes out differently in every process, so the corpus would not be reproducible
_BREATH = re.compile(r"^\s*breath\s", re.M)
SPLITS = ("train", "dev", "test")
GROUP = 16  # utterances per forked child: a fork costs a few ms, an utterance ~20 ms


@dataclass(frozen=True)
class SynthSettings:
    hours: float = 1.0  # hours of training speech; dev and test get 10 % of it each
    vocab: int = 200  # vocabulary size: the N most frequent English words
    seed: int = 0  # everything (sentences, voices, noise) is a function of it
    min_words: int = 3  # words per sentence, uniform in [min_words, max_words]
    max_words: int = 10
    noise_db: tuple = (25.0, 45.0)  # SNR range of the added white noise

    def split_hours(self, split: str) -> float:
        return self.hours if split == "train" else max(self.hours * 0.1, 0.02)


def vocabulary(n: int) -> list[str]:
    """The ``n`` most frequent English words made only of letters and apostrophes."""
    from wordfreq import top_n_list

    words, seen = [], set()
    for w in top_n_list("en", n * 4 + 200):
        if re.fullmatch(r"[a-z]+('[a-z]+)?", w) and (len(w) > 1 or w in ("a", "i")) and w not in seen:
            seen.add(w)
            words.append(w)
            if len(words) == n:
                return words
    raise ConfigError(f"--vocab {n}: only {len(words)} usable words in the frequency list")


def voice_variants(data_path: str | None = None) -> list[str]:
    import espeakng_loader

    folder = Path(data_path or espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and not _UNUSABLE.search(p.name) and not _BREATH.search(p.read_text(errors="replace"))
    )


def split_variants(variants: list[str], seed: int) -> dict[str, list[str]]:
    """Disjoint voice variants per split: ~20 % held out for dev and for test each."""
    order = [str(v) for v in np.random.default_rng([seed, 7]).permutation(variants)]
    n_held = max(2, len(order) // 5)
    return {"test": order[:n_held], "dev": order[n_held : 2 * n_held], "train": order[2 * n_held :]}


# --- the espeak-ng engine (one per process) ---------------------------------------------------

_engine = None


class _Espeak:
    AUDIO_OUTPUT_SYNCHRONOUS = 2
    RATE, PITCH = 1, 3

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        self.sample_rate = self.lib.espeak_Initialize(
            self.AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self.chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = callback_type(self._collect)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, _events):
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def say(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(self.RATE, rate, 0)
        self.lib.espeak_SetParameter(self.PITCH, pitch, 0)
        self.chunks = []
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None)
        wav = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return wav.astype(np.float32) / 32768.0


def _synth_group(jobs: list[dict]) -> list[float]:
    """Synthesise a group of utterances in order in a forked child; returns their durations.

    The pool worker loads espeak-ng but never speaks, so every child starts from the same engine state.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: speak, report the durations through the pipe, exit without running the parent's cleanup
        code = 1
        try:
            os.close(r)
            os.write(w, json.dumps([_synth_one(job) for job in jobs]).encode())  # ~16 floats: within the pipe buffer
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"synthesis of utterances {jobs[0]['id']}..{jobs[-1]['id']} failed (wait status {status})")
    return json.loads(out)


def _worker_init():
    """Load once per worker what every forked child needs; espeak-ng is initialised but never speaks here."""
    global _engine
    import soundfile  # noqa: F401
    import soxr  # noqa: F401

    _engine = _Espeak()


def _synth_one(job: dict) -> float:
    """Synthesise one utterance to FLAC; returns its duration in seconds."""
    global _engine
    import soundfile as sf
    import soxr

    if _engine is None:
        _engine = _Espeak()
    wav = _engine.say(job["text"], job["voice"], job["rate"], job["pitch"])
    wav = soxr.resample(wav, _engine.sample_rate, 16000)
    rng = np.random.default_rng(job["noise_seed"])
    power = float(np.mean(wav**2)) + 1e-10
    wav = wav + rng.standard_normal(len(wav)).astype(np.float32) * np.sqrt(power / 10 ** (job["snr"] / 10))
    wav = np.clip(wav, -1, 1)
    sf.write(job["path"], wav, 16000, format="FLAC", subtype="PCM_16")
    return len(wav) / 16000


def _plan(split: str, s: SynthSettings, words: list[str], variants: list[str], avoid: set[str]):
    """Endless, deterministic stream of utterance jobs for one split."""
    rng = np.random.default_rng([s.seed, SPLITS.index(split)])
    i = 0
    while True:
        n = int(rng.integers(s.min_words, s.max_words + 1))
        text = " ".join(words[j] for j in rng.integers(0, len(words), n))
        if text in avoid:
            continue
        voice_i = i // 40  # 40 utterances per (speaker, chapter): one voice setting each
        vrng = np.random.default_rng([s.seed, SPLITS.index(split), 1000 + voice_i])
        voice = f"{ACCENTS[int(vrng.integers(len(ACCENTS)))]}+{variants[int(vrng.integers(len(variants)))]}"
        spk, chapter = 10000 * (SPLITS.index(split) + 1) + voice_i, voice_i % 7
        yield {
            "id": f"{spk}-{chapter}-{i % 40:04d}",
            "spk": spk,
            "chapter": chapter,
            "text": text,
            "voice": voice,
            "rate": int(vrng.integers(135, 200)),
            "pitch": int(vrng.integers(25, 75)),
            "snr": float(rng.uniform(*s.noise_db)),
            "noise_seed": [s.seed, SPLITS.index(split), i],
        }
        i += 1


def prepare_synth(out: str | Path, settings: SynthSettings, workers: int | None = None, progress: bool = True) -> dict:
    """Write the corpus to ``out`` (LibriSpeech layout). A finished corpus with the same settings is kept as is.

    The corpus is built in ``out.partial`` and renamed when complete, so an
    interrupted run never leaves a corpus that looks finished.
    """
    from tqdm import tqdm

    out = Path(out)
    stamp = out / "synth.json"
    if stamp.exists():
        if json.loads(stamp.read_text())["settings"] == json.loads(json.dumps(asdict(settings))):
            return json.loads(stamp.read_text())
        raise DataError(f"{out}: holds a synthetic corpus with other settings ({stamp}); choose another --out")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not a synthetic corpus; choose another --out")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    words = vocabulary(settings.vocab)
    variants = split_variants(voice_variants(), settings.seed)
    workers = workers or os.cpu_count() or 1
    summary = {"settings": asdict(settings), "splits": {}, "voices": variants}
    train_texts: set[str] = set()
    ctx = mp.get_context("spawn")  # no fork of the parent: it may hold torch/OpenMP threads
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        for split in SPLITS:
            target = settings.split_hours(split) * 3600
            jobs, total = [], 0.0
            off = None if progress else True  # None: off when not a terminal
            bar = tqdm(total=round(target), unit="s", desc=f"synth {split}", disable=off)
            stream = _plan(split, settings, words, variants[split], train_texts if split != "train" else set())
            size = GROUP * max(4, 2 * workers)  # which utterances are kept does not depend on it: plan order
            chunk = [next(stream) for _ in range(size)]
            while total < target:
                for job in chunk:
                    folder = tmp / split / str(job["spk"]) / str(job["chapter"])
                    folder.mkdir(parents=True, exist_ok=True)
                    job["path"] = str(folder / f"{job['id']}.flac")
                groups = [chunk[i : i + GROUP] for i in range(0, len(chunk), GROUP)]
                durations = [d for group in pool.map(_synth_group, groups, chunksize=1) for d in group]
                for job, dur in zip(chunk, durations):
                    if total >= target:
                        os.remove(job["path"])
                        continue
                    jobs.append(job)
                    total += dur
                    bar.update(round(dur))
                chunk = [next(stream) for _ in range(size)]
            bar.close()
            by_chapter: dict[tuple, list] = {}
            for job in jobs:
                by_chapter.setdefault((job["spk"], job["chapter"]), []).append(job)
            for (spk, chapter), group in by_chapter.items():
                lines = "".join(f"{j['id']} {j['text'].upper()}\n" for j in group)
                (tmp / split / str(spk) / str(chapter) / f"{spk}-{chapter}.trans.txt").write_text(lines)
            if split == "train":
                train_texts = {j["text"] for j in jobs}
            summary["splits"][split] = {"utterances": len(jobs), "hours": round(total / 3600, 4)}
    summary["vocab_words"] = len(words)
    (tmp / "synth.json").write_text(json.dumps(summary, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return json.loads(stamp.read_text())
