"""Reading corpora: a tiny LibriSpeech-layout corpus written here is read back exactly; bad input is named."""

import json

import numpy as np
import pytest
import soundfile as sf

from stt.data.audio import read_audio
from stt.data.corpus import CorpusError, find_splits, read_librispeech, read_manifest, resolve_split
from stt.data.synth import _Espeak


@pytest.fixture(scope="module")
def speech():
    eng = _Espeak()
    return lambda text: eng.say(text, "en-us+m3", 170, 50), eng.sample_rate


def _write(path, wav, sr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, sr, **kw)


def test_librispeech_layout_round_trip(tmp_path, speech):
    say, sr = speech
    split = tmp_path / "LibriSpeech" / "dev-clean"  # split folders at any depth
    written = {}
    for spk, chapter, n in [(84, 121, 3), (174, 50, 2)]:
        lines = []
        for u in range(n):
            uid = f"{spk}-{chapter}-{u:04d}"
            text = ["HELLO WORLD", "THE CAT SAT", "A DOG RAN FAST"][u % 3]
            import soxr

            wav = soxr.resample(say(text.lower()), sr, 16000)
            _write(split / str(spk) / str(chapter) / f"{uid}.flac", wav, 16000)
            written[uid] = (text, len(wav) / 16000)
            lines.append(f"{uid} {text}")
        (split / str(spk) / str(chapter) / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    assert find_splits(tmp_path) == {"dev-clean": split}
    assert resolve_split(find_splits(tmp_path), "dev") == "dev-clean"
    utts, skipped = read_librispeech(split)
    assert not skipped
    assert {u.id: (u.text, round(u.duration, 4)) for u in utts} == {
        k: (t, round(d, 4)) for k, (t, d) in written.items()
    }


def test_a_split_of_symlinked_speakers_and_a_symlinked_split_are_read_and_a_link_loop_ends(tmp_path):
    # the README's LibriSpeech recipe: train joins three corpora's speakers by links; dev links a whole split
    ls = tmp_path / "LibriSpeech"
    for corpus, spk in (("train-clean-100", 19), ("train-other-500", 20), ("dev-clean", 84)):
        chapter = ls / corpus / str(spk) / "1"
        chapter.mkdir(parents=True)
        (chapter / f"{spk}-1.trans.txt").write_text(f"{spk}-1-0000 HELLO\n")
        sf.write(chapter / f"{spk}-1-0000.flac", np.zeros(1600, np.float32), 16000)
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for corpus, spk in (("train-clean-100", 19), ("train-other-500", 20)):
        (data / "train" / str(spk)).symlink_to(ls / corpus / str(spk))
    (data / "dev").symlink_to(ls / "dev-clean")
    (data / "dev" / "84" / "loop").symlink_to(data)  # a link back up: walked once, not forever
    splits = find_splits(data)
    assert splits == {"train": data / "train", "dev": data / "dev"}
    assert sorted(u.id for u in read_librispeech(splits["train"])[0]) == ["19-1-0000", "20-1-0000"]


def test_bad_input_is_skipped_and_named(tmp_path, speech):
    say, sr = speech
    ch = tmp_path / "train" / "1" / "2"
    wav = say("good morning")
    _write(ch / "1-2-0000.flac", wav, sr)  # 22.05 kHz: kept, resampled on read
    _write(ch / "1-2-0001.flac", np.stack([wav, wav], 1), sr)  # stereo: kept, downmixed
    _write(ch / "1-2-0002.flac", wav, sr)  # empty transcript
    _write(ch / "1-2-0003.wav", np.zeros(0, np.float32), 16000)  # zero-length (FLAC cannot even hold it)
    (ch / "1-2-0004.flac").write_bytes(b"not audio at all")  # unreadable
    _write(ch / "1-2-0005.flac", wav, sr)  # no transcript line
    (ch / "1-2.trans.txt").write_text(
        "1-2-0000 GOOD MORNING\n1-2-0001 GOOD MORNING\n1-2-0002 \n"
        "1-2-0003 SILENCE\n1-2-0004 BROKEN\n1-2-0009 NO AUDIO\n"
    )
    utts, skipped = read_librispeech(tmp_path / "train")
    assert [u.id for u in utts] == ["1-2-0000", "1-2-0001"]
    reasons = "\n".join(map(str, skipped))
    assert "1-2.trans.txt:3: empty transcript for 1-2-0002" in reasons
    assert "1-2-0003.wav: zero-length audio" in reasons
    assert "1-2-0004.flac: cannot read audio" in reasons
    assert "1-2.trans.txt:6: transcript for 1-2-0009 has no audio file" in reasons
    assert "1-2-0005.flac: audio has no transcript line" in reasons
    mono = read_audio(utts[1].path)
    assert mono.ndim == 1 and abs(len(mono) - len(wav) * 16000 / sr) < 2


def test_plain_manifests(tmp_path, speech):
    say, sr = speech
    _write(tmp_path / "audio" / "a.wav", say("yes"), sr)
    _write(tmp_path / "audio" / "b.wav", say("no"), sr)
    (tmp_path / "train.tsv").write_text("audio/a.wav\tYES\naudio/b.wav\tNO\naudio/missing.wav\tGONE\n")
    (tmp_path / "dev.jsonl").write_text(json.dumps({"path": "audio/a.wav", "text": "YES", "id": "u1"}) + "\n")
    splits = find_splits(tmp_path)
    assert set(splits) == {"train", "dev"}
    utts, skipped = read_manifest(splits["train"])
    assert [(u.id, u.text) for u in utts] == [("a", "YES"), ("b", "NO")]
    assert "train.tsv:3" in str(skipped[0]) and "missing.wav: audio file not found" in str(skipped[0])
    assert read_manifest(splits["dev"])[0][0].id == "u1"
    (tmp_path / "bad.tsv").write_text("no tab here\n")
    with pytest.raises(CorpusError, match=r"bad\.tsv:1: expected 'path<TAB>transcript'"):
        read_manifest(tmp_path / "bad.tsv")


def test_a_recording_over_the_cap_is_skipped_and_named_without_reading_its_audio(tmp_path, tiny_corpus, capsys):
    """A small FLAC can hold hours of silence: decoded whole, it took 11 GB. Its header says how long it is."""
    import shutil

    from stt.cli import main

    data = tmp_path / "d"
    shutil.copytree(tiny_corpus, data)
    chapter = next((data / "train").glob("*/*"))
    with sf.SoundFile(chapter / "9-9-9999.flac", "w", 16000, 1, format="FLAC") as f:
        for _ in range(60):  # 10 minutes of silence, written a second at a time
            f.write(np.zeros(16000 * 10, np.int16))
    trans = next(chapter.glob("*.trans.txt"))
    trans.write_text(trans.read_text() + "9-9-9999 LONG SILENCE\n")
    assert (
        main(["prepare", "features", "--data", str(data), "--splits", "train", "--max-seconds", "30", "--quiet"]) == 0
    )
    assert "9-9-9999.flac: 600 s of audio, over the 30 s cap (--max-seconds)" in capsys.readouterr().out
    _, skipped = read_librispeech(data / "train", max_seconds=1e9)
    assert not skipped  # without the cap it is an ordinary utterance
