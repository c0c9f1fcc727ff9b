"""The built-in synthetic corpus: layout, held-out voices and sentences, determinism."""

import json

import pytest

from stt.data.corpus import find_splits, read_librispeech
from stt.data.synth import SynthSettings, prepare_synth, split_variants, voice_variants


def test_layout_and_held_out_voices_and_sentences(tiny_corpus):
    splits = find_splits(tiny_corpus)
    assert set(splits) == {"train", "dev", "test"}
    texts, voices = {}, json.loads((tiny_corpus / "synth.json").read_text())["voices"]
    for name, folder in splits.items():
        utts, skipped = read_librispeech(folder)
        assert utts and not skipped
        assert all(0.3 < u.duration < 10 for u in utts)
        texts[name] = {u.text for u in utts}
    assert not texts["test"] & texts["train"] and not texts["dev"] & texts["train"]
    assert not set(voices["test"]) & set(voices["train"]) and not set(voices["dev"]) & set(voices["train"])
    assert len(voice_variants()) >= 40


@pytest.mark.slow
def test_deterministic_for_a_seed_and_idempotent(tmp_path, tiny_corpus):
    s = SynthSettings(hours=0.004, vocab=30, seed=3, min_words=2, max_words=5)
    a = prepare_synth(tmp_path / "a", s, workers=1, progress=False)
    again = prepare_synth(tmp_path / "a", s, workers=1, progress=False)  # already there: no-op
    assert a == again
    prepare_synth(tmp_path / "b", s, workers=2, progress=False)
    ta = sorted((tmp_path / "a" / "train").rglob("*.trans.txt"))
    tb = sorted((tmp_path / "b" / "train").rglob("*.trans.txt"))
    assert [p.read_text() for p in ta] == [p.read_text() for p in tb]
    # the audio too, byte for byte: espeak-ng's hidden state must not depend on which worker spoke what
    fa, fb = sorted((tmp_path / "a").rglob("*.flac")), sorted((tmp_path / "b").rglob("*.flac"))
    assert [p.relative_to(tmp_path / "a") for p in fa] == [p.relative_to(tmp_path / "b") for p in fb]
    assert [p.read_bytes() for p in fa] == [p.read_bytes() for p in fb]
    assert (
        split_variants(voice_variants(), 3)
        == split_variants(voice_variants(), 3)
        != split_variants(voice_variants(), 4)
    )
    assert not (tmp_path / "a.partial").exists()
