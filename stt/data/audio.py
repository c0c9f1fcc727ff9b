"""Reading audio: any format soundfile reads, downmixed to mono and resampled to 16 kHz."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from stt.core.errors import DataError

SAMPLE_RATE = 16000
log = logging.getLogger(__name__)
_told = set()


class AudioError(DataError):
    """Missing, unreadable or empty audio (the message names the file)."""


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return mono float32 samples at ``sample_rate``.

    Stereo is averaged to mono and other rates are resampled (soxr), each said
    once per process so a corpus of 44.1 kHz files logs one line, not thousands.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [N, channels]
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError with its own text
        raise AudioError(f"{path}: cannot read audio ({e})") from None
    if wav.shape[0] == 0:
        raise AudioError(f"{path}: zero-length audio")
    if wav.shape[1] > 1:
        _say_once("downmix", f"{path}: {wav.shape[1]} channels, downmixing to mono (said once)")
    wav = wav.mean(axis=1)
    if sr != sample_rate:
        import soxr

        _say_once(f"sr{sr}", f"{path}: {sr} Hz audio, resampling to {sample_rate} Hz (said once per rate)")
        wav = soxr.resample(wav, sr, sample_rate).astype(np.float32)
    return np.ascontiguousarray(wav)


def audio_duration(path: str | Path) -> float:
    if not Path(path).is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio ({e})") from None
    return info.frames / info.samplerate


def _say_once(key: str, message: str) -> None:
    if key not in _told:
        _told.add(key)
        log.warning(message)
