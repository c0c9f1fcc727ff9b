"""Shared fixtures: a tiny synthetic corpus, made once per test session."""

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """~40 s of synthetic speech (train/dev/test, LibriSpeech layout), 30-word vocabulary."""
    from stt.data.synth import SynthSettings, prepare_synth

    out = tmp_path_factory.mktemp("corpus") / "synth"
    prepare_synth(
        out, SynthSettings(hours=0.012, vocab=30, seed=3, min_words=2, max_words=5), workers=2, progress=False
    )
    return out


@pytest.fixture(autouse=True)
def _host_runs_root(monkeypatch):
    """Tests choose their runs roots themselves: the machine's $STT_RUNS_DIR must not move them."""
    monkeypatch.delenv("STT_RUNS_DIR", raising=False)
