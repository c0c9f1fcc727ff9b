"""A corpus opened once: its prepared caches open again from their folders without touching the audio."""

import shutil

from stt.data.training_data import open_training_data, reopen


def test_prepared_caches_reopen_without_the_audio(tiny_corpus, tmp_path):
    """What every trial of a search does: the worker checked the corpus once; a trial reads the caches' indexes."""
    corpus = tmp_path / "c"
    shutil.copytree(tiny_corpus, corpus)
    opened = open_training_data(corpus, progress=False)
    for audio in corpus.rglob("*.flac"):  # a trial must not need them (nor stat them: 300 k files take a minute)
        audio.unlink()
    again = reopen(opened.where())
    assert again.where() == opened.where() and again.split_names == opened.split_names
    for role, cache in opened.caches.items():
        assert again.caches[role].utterances == cache.utterances
        assert (again.caches[role].features(0) == cache.features(0)).all()
