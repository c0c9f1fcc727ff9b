"""Frontends: fbank shape/rate; the real fairseq wav2vec 1.0 loading path on a tiny checkpoint built here."""

import argparse
import dataclasses

import numpy as np
import pytest
import torch

from stt.data.frontends import Fbank, FrontendError, build_frontend


def test_fbank_shape_rate_and_normalisation():
    fb = Fbank()
    wav = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32)
    x = fb(wav)
    assert x.shape == (fb.num_frames(len(wav)), 80) and abs(x.shape[0] - 200) <= 2
    assert fb.frames_per_second == 100
    torch.testing.assert_close(x.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    assert fb(np.zeros(100, np.float32)).shape == (1, 80)  # shorter than a window: one frame


def _tiny_wav2vec_checkpoint(path):
    fairseq = pytest.importorskip("fairseq", reason="the wav2vec extra is not installed")  # noqa: F841
    from fairseq.models.wav2vec import Wav2VecModel
    from fairseq.models.wav2vec.wav2vec import Wav2VecConfig

    cfg = Wav2VecConfig()
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    # wav2vec_large's strides (5*4*2*2*2 = 160 samples -> 100 Hz), 16 channels instead of 512
    fields.update(
        conv_feature_layers="[(16, 10, 5), (16, 8, 4), (16, 4, 2), (16, 4, 2), (16, 4, 2), (16, 1, 1), (16, 1, 1)]",
        conv_aggregator_layers="[(24, 2, 1), (24, 3, 1), (24, 4, 1)]",
        prediction_steps=2,
    )
    args = argparse.Namespace(arch="wav2vec", **fields)
    torch.manual_seed(0)
    model = Wav2VecModel.build_model(args, task=None)
    # beside the weights, fairseq keeps its training state, with numpy scalars in it
    state = {
        "optimizer_history": [{"criterion_name": "Wav2vecCriterion", "num_updates": np.int64(400000)}],
        "extra_state": {"val_loss": np.float64(2.25), "train_iterator": {"epoch": 3}},
    }
    torch.save({"args": args, "model": model.state_dict(), **state}, path)
    return model.eval()


def test_fbank_takes_a_bin_count_which_keys_its_cache_and_a_bad_one_is_one_line():
    from stt.core.errors import ConfigError
    from stt.train.run_config import load_run_config

    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    f64, f80 = build_frontend("fbank:64"), build_frontend("fbank")
    feats = f64(wav)
    assert feats.shape == (98, 64) and f64.feature_size == 64 and f80(wav).shape == (98, 80)
    assert f64.identity != f80.identity and f64.identity == build_frontend("fbank:64").identity
    # per utterance and per feature (NeMo's per_feature): every bin zero mean, unit variance
    torch.testing.assert_close(feats.mean(0), torch.zeros(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.std(0, unbiased=False), torch.ones(64), atol=1e-3, rtol=0)
    assert build_frontend("fbank:80").identity == f80.identity  # the same features, the same cache
    for bad in ("fbank:7", "fbank:x", "fbank:", "fbank:999", "fbank:²", "fbank:٦٤"):
        with pytest.raises(FrontendError, match="fbank:BINS takes 8 to 256 mel bins"):
            build_frontend(bad)
        with pytest.raises(ConfigError) as e:
            load_run_config({"frontend": bad, "model": {"layers": [[[["conv_block", {"in_chan": 8, "out_chan": 8}]]]]}})
        assert str(e.value).startswith(f"frontend: '{bad}': fbank:BINS takes 8 to 256") and "\n" not in str(e.value)


def test_a_wav2vec_checkpoint_that_runs_code_is_refused_and_the_code_never_runs(tmp_path):
    """Before: torch.load(weights_only=False) ran the payload while building the frontend."""
    _tiny_wav2vec_checkpoint(tmp_path / "good.pt")
    ck = torch.load(tmp_path / "good.pt", weights_only=False)
    ck["extra_state"]["payload"] = _Payload(tmp_path / "pwned")
    torch.save(ck, tmp_path / "evil.pt")
    with pytest.raises(FrontendError, match=r"evil\.pt: refused to load: it would call posix\.system"):
        build_frontend(f"wav2vec:{tmp_path / 'evil.pt'}")
    assert not (tmp_path / "pwned").exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_wav2vec_checkpoint_loads_through_fairseq_and_matches_direct_forward(tmp_path):
    ckpt = tmp_path / "wav2vec_tiny.pt"
    direct = _tiny_wav2vec_checkpoint(ckpt)
    fe = build_frontend(f"wav2vec:{ckpt}")
    assert fe.feature_size == 24 and fe.frames_per_second == 100.0
    wav = np.random.default_rng(1).standard_normal(16000 * 3).astype(np.float32) * 0.1
    feats = fe(wav)
    assert feats.shape == (fe.num_frames(len(wav)), 24)
    assert abs(feats.shape[0] / 3 - 100) < 2  # ~100 Hz
    with torch.no_grad():
        ref = direct.feature_aggregator(direct.feature_extractor(torch.from_numpy(wav)[None]))[0].T
    torch.testing.assert_close(feats, ref)
    assert fe.identity.startswith("wav2vec1-")


def test_wrong_checkpoints_are_named(tmp_path):
    pytest.importorskip("fairseq", reason="the wav2vec extra is not installed")
    bad = tmp_path / "w2v2.pt"
    torch.save({"cfg": {}, "model": {}}, bad)  # wav2vec 2.0 layout
    with pytest.raises(FrontendError, match=r"w2v2\.pt: not a wav2vec 1\.0 checkpoint"):
        build_frontend(f"wav2vec:{bad}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nope")
    with pytest.raises(FrontendError, match=r"junk\.pt: not a readable checkpoint"):
        build_frontend(f"wav2vec:{junk}")
    with pytest.raises(FrontendError, match="needs a checkpoint"):
        build_frontend("wav2vec")
    with pytest.raises(FrontendError, match="unknown frontend 'mfcc'"):
        build_frontend("mfcc")


def test_wav2vec_identity_is_hashed_once_per_file_state(tmp_path, monkeypatch):
    from stt.data import frontends

    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"x" * 3_000_000)
    reads = []
    real_open = open

    def counting_open(path, *a, **kw):
        if str(path) == str(ckpt.resolve()):
            reads.append(path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", counting_open)
    first = frontends.frontend_identity(f"wav2vec:{ckpt}")
    assert [frontends.frontend_identity(f"wav2vec:{ckpt}") for _ in range(5)] == [first] * 5
    assert len(reads) == 1  # every split of every trial asks; the 300 MB file is read once
    mtime = ckpt.stat().st_mtime_ns
    ckpt.write_bytes(b"y" * 3_000_000)  # retrained in place: same size, new bytes, a later mtime
    __import__("os").utime(ckpt, ns=(mtime + 10**9, mtime + 10**9))  # a filesystem's clock may be coarse
    assert frontends.frontend_identity(f"wav2vec:{ckpt}") != first and len(reads) == 2
