"""Frozen frontends: 16 kHz audio -> feature frames ``[T, F]``.

Every frontend says its ``frames_per_second``, ``feature_size`` and an
``identity`` string that changes whenever its output could change (settings,
code version, checkpoint bytes): the feature cache is keyed by it.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import math
import re
from pathlib import Path

import numpy as np
import torch

from stt.core.checkpoint import load_checkpoint
from stt.core.errors import CheckpointError, DataError
from stt.data.audio import SAMPLE_RATE


class FrontendError(DataError):
    """A frontend that cannot be built (bad spec or checkpoint; the message names it)."""


class Frontend:
    frames_per_second: float
    feature_size: int
    identity: str

    def __call__(self, wav: np.ndarray) -> torch.Tensor:  # [N] float32 at 16 kHz -> [T, F] float32
        raise NotImplementedError

    def num_frames(self, num_samples: int) -> int:
        raise NotImplementedError


def _mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, f_min: float = 20.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular HTK-mel filters ``[n_fft // 2 + 1, n_mels]``."""
    f_max = f_max or sample_rate / 2
    mels = np.linspace(_mel(f_min), _mel(f_max), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    fb = np.maximum(0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))  # [n_mels, n_freq]
    return torch.from_numpy(fb.T.astype(np.float32))


class Fbank(Frontend):
    """Log-mel filterbank, 25 ms windows every 10 ms, per-utterance mean/variance normalisation.

    The normalisation is per feature (each mel bin to zero mean, unit variance over the utterance's
    frames), as NeMo's ``normalize: per_feature`` does; NeMo divides by the unbiased deviation, this by the
    biased one (a factor of ``sqrt(n / (n - 1))``, 1.0005 for a 10 s utterance). ``n_mels`` is in the cache
    identity, so 64- and 80-bin caches never mix.
    """

    VERSION = 1  # bump when the computation changes: it invalidates caches

    def __init__(self, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0):
        self.n_mels, self.win, self.hop = n_mels, int(SAMPLE_RATE * win_ms / 1000), int(SAMPLE_RATE * hop_ms / 1000)
        self.n_fft = 1 << (self.win - 1).bit_length()  # 400 -> 512
        self.window = torch.hann_window(self.win)
        self.filters = mel_filterbank(n_mels, self.n_fft, SAMPLE_RATE)
        self.frames_per_second = SAMPLE_RATE / self.hop
        self.feature_size = n_mels
        self.identity = f"fbank{n_mels}-w{self.win}-h{self.hop}-v{self.VERSION}"

    def num_frames(self, num_samples: int) -> int:
        return 1 + max(num_samples - self.win, 0) // self.hop

    @torch.no_grad()
    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(wav, dtype=torch.float32)
        if x.numel() < self.win:
            x = torch.nn.functional.pad(x, (0, self.win - x.numel()))
        x = torch.cat([x[:1], x[1:] - 0.97 * x[:-1]])  # pre-emphasis
        # stft frames n_fft samples (the 25 ms window sits inside them); pad so the count is the 25 ms one
        x = torch.nn.functional.pad(x, (0, self.n_fft - self.win))
        spec = torch.stft(x, self.n_fft, self.hop, self.win, self.window, center=False, return_complex=True)
        power = spec.abs().pow(2).T  # [T, n_fft/2+1]
        feats = torch.log(power @ self.filters + 1e-6)  # [T, n_mels]
        return (feats - feats.mean(0)) / (feats.std(0, unbiased=False) + 1e-5)


def _fairseq_globals() -> list:
    """What fairseq pickles beside tensors: its args, and numpy scalars in the training state."""
    core = getattr(np, "_core", None) or np.core
    classes = [argparse.Namespace, core.multiarray.scalar, np.dtype]
    classes += [
        getattr(np.dtypes, n)
        for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")
        if hasattr(np, "dtypes") and hasattr(np.dtypes, n)
    ]
    return classes


_FAIRSEQ_GLOBALS = _fairseq_globals()


def _conv_layers(path: Path, text) -> list[tuple[int, int, int]]:
    """fairseq stores ``conv_feature_layers`` as a Python literal: read it as one, never run it."""
    try:
        layers = ast.literal_eval(text) if isinstance(text, str) else text
        layers = [(int(c), int(k), int(s)) for c, k, s in layers]
    except (ValueError, SyntaxError, TypeError) as e:
        raise FrontendError(f"{path}: args.conv_feature_layers is not a list of (dim, kernel, stride) ({e})") from None
    return layers


class Wav2Vec(Frontend):
    """fairseq wav2vec 1.0: ``feature_aggregator(feature_extractor(wav))``, frozen.

    Reads the ``wav2vec_large.pt`` checkpoint layout ``{'args': Namespace,
    'model': state_dict}``. Needs the optional extra ``pip install .[wav2vec]``.
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu"):
        path = Path(checkpoint)
        if not path.is_file():
            raise FrontendError(f"{path}: wav2vec checkpoint not found")
        try:
            from fairseq.models.wav2vec import Wav2VecModel
        except ImportError as e:
            raise FrontendError(f"the wav2vec frontend needs fairseq: pip install '.[wav2vec]' ({e})") from None
        try:  # weights_only, with the plain classes a fairseq checkpoint holds: nothing in the file runs
            ckpt = load_checkpoint(path, allow=_FAIRSEQ_GLOBALS)
        except CheckpointError as e:
            raise FrontendError(f"wav2vec checkpoint {e}") from None
        if "args" not in ckpt or "model" not in ckpt or not isinstance(ckpt["args"], argparse.Namespace):
            keys = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise FrontendError(
                f"{path}: not a wav2vec 1.0 checkpoint (expected keys 'args' and 'model', found {keys}; "
                "wav2vec 2.0 checkpoints are not supported)"
            )
        args = ckpt["args"]
        if (
            getattr(args, "arch", "wav2vec") != "wav2vec"
            or not hasattr(args, "conv_feature_layers")
            or hasattr(args, "encoder_layers")
        ):
            raise FrontendError(f"{path}: checkpoint is for arch {getattr(args, 'arch', '?')!r}, not wav2vec 1.0")
        model = Wav2VecModel.build_model(args, task=None)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise FrontendError(f"{path}: weights do not fit the model its args describe ({str(e)[:200]})") from None
        self.model = model.eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = device
        layers = _conv_layers(path, args.conv_feature_layers)
        self.strides = [s for _, _, s in layers]
        self.kernels = [k for _, k, _ in layers]
        self.frames_per_second = SAMPLE_RATE / math.prod(self.strides)
        with torch.no_grad():
            self.feature_size = self(np.zeros(SAMPLE_RATE, np.float32)).shape[1]
        self.identity = wav2vec_identity(path)

    def num_frames(self, num_samples: int) -> int:
        n = num_samples
        for k, s in zip(self.kernels, self.strides):
            n = (n - k) // s + 1
        return n

    @torch.no_grad()
    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(wav, dtype=torch.float32, device=self.device)[None]  # [1, N]
        z = self.model.feature_extractor(x)  # [1, C, T]
        c = self.model.feature_aggregator(z)  # [1, C', T]
        return c[0].T.float().cpu()  # [T, C']


def wav2vec_identity(path: str | Path) -> str:
    """Cache identity of a wav2vec checkpoint: its bytes, so a retrained file never reuses stale features.

    Hashing 300 MB takes about a second, and every split of every trial asks: the hash is kept per
    (file, size, modification time), so a file is read once per process unless it changes.
    """
    st = Path(path).stat()
    return _hash_file(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"wav2vec1-{h.hexdigest()[:12]}"


def frontend_identity(spec: str) -> str:
    """The identity of a frontend spec without building it (no model load)."""
    if spec.startswith("wav2vec:"):
        path = Path(spec.split(":", 1)[1])
        if not path.is_file():
            raise FrontendError(f"{path}: wav2vec checkpoint not found")
        return wav2vec_identity(path)
    return build_frontend(spec).identity  # cheap for fbank; raises the frontend's own error for a bad spec


FBANK_BINS = (8, 256)  # the mel bins an ``fbank:N`` spec may ask for, inclusive


def spec_problem(spec) -> str | None:
    """What is wrong with a frontend spec's syntax (None: nothing), without building it or reading a file.

    Specs: ``fbank`` (80 log-mel bins), ``fbank:N`` (N bins, e.g. ``fbank:64`` as QuartzNet and Citrinet's
    NeMo recipes use), ``wav2vec:CHECKPOINT``.
    """
    if not isinstance(spec, str):
        return "expected fbank, fbank:BINS or wav2vec:CHECKPOINT"
    if spec == "fbank" or spec.startswith("wav2vec:"):
        return None
    if spec.startswith("fbank:"):
        bins = spec[len("fbank:") :]
        lo, hi = FBANK_BINS
        # ASCII digits only: str.isdigit() takes "²", which int() refuses
        if not (re.fullmatch(r"[0-9]{1,4}", bins) and lo <= int(bins) <= hi):
            return f"fbank:BINS takes {lo} to {hi} mel bins, got {bins!r}"
        return None
    return "expected fbank, fbank:BINS or wav2vec:CHECKPOINT"


def feature_size_of(spec: str) -> int | None:
    """The feature size a spec gives, where the spec alone says it (fbank); None for a neural frontend."""
    if spec == "fbank":
        return 80
    if spec.startswith("fbank:"):
        return int(spec[len("fbank:") :])
    return None


@functools.lru_cache(maxsize=4)
def build_frontend(spec: str, device: str = "cpu") -> Frontend:
    """``"fbank"``, ``"fbank:N"`` or ``"wav2vec:PATH/TO/checkpoint.pt"``; a neural frontend runs on ``device``."""
    if spec == "fbank":
        return Fbank()
    if spec.startswith("fbank:") and spec_problem(spec) is None:
        return Fbank(n_mels=int(spec[len("fbank:") :]))
    if spec.startswith("wav2vec:"):
        return Wav2Vec(spec.split(":", 1)[1], device=device)
    if spec == "wav2vec":
        raise FrontendError("frontend 'wav2vec' needs a checkpoint: --frontend wav2vec:PATH/TO/wav2vec_large.pt")
    raise FrontendError(
        f"unknown frontend {spec!r}: {spec_problem(spec) or 'expected fbank, fbank:BINS or wav2vec:CHECKPOINT'}"
    )
