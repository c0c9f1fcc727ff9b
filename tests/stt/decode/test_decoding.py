"""Decoding: greedy, and beam search with a lexicon and an LM, on emission matrices made by hand; the LM
files `stt lm build` writes, checked through KenLM itself; lexicon and LM files that must be refused."""

import math

import pytest
import torch

from stt.data.text import LetterTokenizer
from stt.decode.beam import BeamDecoder, BeamSettings, make_decoder
from stt.decode.greedy import greedy_decode
from stt.decode.lm import LMError, build_arpa, lexicon_text, read_lexicon, read_lm_vocabulary

TOK = LetterTokenizer()
SENTENCES = [s.split() for s in ("the cat sat", "the cap fell", "a cat sat on the cap", "their cat sat")]


def emission(text: str, confusions: dict[int, tuple[str, float]] | None = None) -> torch.Tensor:
    """Log-probs [1, T, V]: each letter for one frame (then a blank frame); at letter i, ``confusions[i]``
    = (letter, log-prob) puts a rival letter above the true one, so the greedy path misspells the word."""
    rows = []
    for i, c in enumerate(text):
        r = torch.full((len(TOK),), -9.0)
        r[TOK.index[c]] = -0.4
        if confusions and i in confusions:
            rival, lp = confusions[i]
            r[TOK.index[rival]] = lp
        blank = torch.full((len(TOK),), -9.0)
        blank[TOK.blank] = -0.05
        rows += [r, blank]
    return torch.stack(rows).log_softmax(-1)[None]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "lexicon.txt").write_text(lexicon_text(SENTENCES))
    (tmp_path / "bigram.arpa").write_text(build_arpa(SENTENCES, 2))
    (tmp_path / "unigram.arpa").write_text(build_arpa(SENTENCES, 1))
    return tmp_path


def test_the_beam_with_a_lexicon_recovers_the_transcript_whose_greedy_path_misspells_a_word(files):
    em = emission("the cat sat", {5: ("e", -0.1)})  # 'cat' -> 'cet' on the greedy path
    lengths = torch.tensor([em.shape[1]])
    assert TOK.decode(greedy_decode(em, lengths)[0]) == "the cet sat"
    assert BeamDecoder(TOK)(em, lengths) == ["the cet sat"]  # lexicon-free: the letters as they came
    assert make_decoder(TOK, lexicon=files / "lexicon.txt")(em, lengths) == ["the cat sat"]
    assert make_decoder(TOK, files / "bigram.arpa", "auto")(em, lengths) == ["the cat sat"]


def test_letters_held_for_several_frames_decode_as_greedy_reads_them(files):
    # CTC models often hold a letter (a word's last one too) for several frames with no blank between:
    # a decoder that ends a word on the first frame of its last letter cannot account for the others
    rows = []
    for i, c in enumerate("the cat sat"):
        r = torch.full((len(TOK),), -9.0)
        r[TOK.index[c]] = -0.1
        rows += [r] * (2 + i % 3)  # 2-4 frames each, no blanks at all
    em = torch.stack(rows).log_softmax(-1)[None]
    lengths = torch.tensor([em.shape[1]])
    assert TOK.decode(greedy_decode(em, lengths)[0]) == "the cat sat"
    assert make_decoder(TOK, lexicon=files / "lexicon.txt")(em, lengths) == ["the cat sat"]
    assert make_decoder(TOK, files / "unigram.arpa", files / "lexicon.txt")(em, lengths) == ["the cat sat"]


def test_the_lm_chooses_between_two_lexicon_words_the_acoustics_cannot_tell_apart(files):
    # 'ca?' with p and t equally likely: after "the" the bigram LM has seen "cap" and "cat" ... after "a" only "cat"
    em = emission("a cat", {4: ("p", -0.4)})
    lengths = torch.tensor([em.shape[1]])
    no_lm = make_decoder(TOK, lexicon=files / "lexicon.txt")(em, lengths)[0]
    assert no_lm in ("a cat", "a cap")
    s = BeamSettings(lm_weight=2.0)
    assert make_decoder(TOK, files / "bigram.arpa", files / "lexicon.txt", s)(em, lengths) == ["a cat"]
    em = emission("on the cat", {9: ("p", -0.3)})  # the acoustics now lean to 'cap', and so does the LM after "the"
    assert make_decoder(TOK, files / "bigram.arpa", files / "lexicon.txt", s)(em, torch.tensor([em.shape[1]])) == [
        "on the cap"
    ]


def test_a_batch_is_decoded_per_utterance_with_its_own_length(files):
    a, b = emission("the cat sat"), emission("a cap")
    em = torch.full((2, a.shape[1], len(TOK)), -9.0).log_softmax(-1)
    em[0], em[1, : b.shape[1]] = a[0], b[0]  # the second utterance is padded with junk past its length
    out = make_decoder(TOK, files / "unigram.arpa", files / "lexicon.txt")(em, torch.tensor([a.shape[1], b.shape[1]]))
    assert out == ["the cat sat", "a cap"]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_built_lms_are_normalised_as_kenlm_reads_them(files, order):
    """For every context KenLM can be in, the next-word probabilities (``</s>`` and ``<unk>`` included) sum to 1."""
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    path = files / f"o{order}.arpa"
    path.write_text(build_arpa(SENTENCES, order))
    info = read_lm_vocabulary(path, TOK)
    assert info.order == max(order, 2) and "the" in info.unigrams  # order 1 is written as a bigram model KenLM loads
    vocab = sorted({w for s in SENTENCES for w in s})
    words = Dictionary(["<unk>", *vocab, "</s>"])
    lm = KenLM(str(path), words)
    contexts = [lm.start(False)]
    for w in ("the", "a", "cat"):
        contexts.append(lm.score(contexts[-1], words.get_index(w))[0])
    for state in contexts:
        total = sum(10 ** lm.score(state, i)[1] for i in range(1, len(vocab) + 1)) + 10 ** lm.finish(state)[1]
        unk = 10 ** lm.score(state, 0)[1]
        assert total + unk == pytest.approx(1.0, abs=0.02), (order, total, unk)


def test_build_arpa_refuses_order_zero():
    with pytest.raises(LMError, match=r"--order 0: expected an integer >= 1"):
        build_arpa(SENTENCES, 0)


def test_lexicon_files_in_both_layouts_and_their_errors(tmp_path):
    p = tmp_path / "lex.txt"
    p.write_text("cat\nit's i t ' s\nhello h e l l o |\n\n")  # letters implied, spelt out, wav2letter's trailing '|'
    lex = read_lexicon(p, TOK)
    assert lex.words == ["cat", "it's", "hello"] and lex.spellings["it's"] == [TOK.index[c] for c in "it's"]
    p.write_text("cat\nnaïve n a ï v e\n")
    with pytest.raises(LMError, match=rf"^{p}:2: word 'naïve': symbol 'ï' is not in the model's alphabet"):
        read_lexicon(p, TOK)
    p.write_text("\n\n")
    with pytest.raises(LMError, match=r"no words"):
        read_lexicon(p, TOK)
    with pytest.raises(LMError, match=r"nope\.txt: lexicon not found"):
        read_lexicon(tmp_path / "nope.txt", TOK)


@pytest.mark.parametrize(
    "text,message",
    [
        ("hello\n", r":1: not an ARPA language model \(expected '\\data\\' first"),
        ("\\data\\\nngram one=3\n", r":2: expected 'ngram N=count'"),
        (
            "\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\tDÉJÀ\n",
            r":5: LM word 'DÉJÀ' has 'àé', outside the model's alphabet",
        ),
        ("\\data\\\nngram 1=2\n", r"no '\\data\\' counts or no '\\1-grams:' section"),
    ],
)
def test_lm_files_that_are_not_arpa_or_of_another_alphabet_are_refused_naming_the_line(tmp_path, text, message):
    p = tmp_path / "lm.arpa"
    p.write_text(text)
    with pytest.raises(LMError, match=message):
        read_lm_vocabulary(p, TOK)
    p.write_bytes(b"\x80\x81binary junk")
    with pytest.raises(LMError, match=r"not UTF-8 text\) nor a KenLM binary"):
        read_lm_vocabulary(p, TOK)


def test_an_upper_case_lm_like_librispeech_s_decodes_to_lower_case_words(tmp_path):
    p = tmp_path / "upper.arpa"
    p.write_text(build_arpa([[w.upper() for w in sentence] for sentence in SENTENCES], 2))
    info = read_lm_vocabulary(p, TOK)
    assert info.upper
    em = emission("the cat sat", {5: ("e", -0.1)})
    decoder = make_decoder(TOK, p, "auto", BeamSettings(lm_weight=1.0))
    assert decoder(em, torch.tensor([em.shape[1]])) == ["the cat sat"]
    assert not math.isinf(decoder._model.score(decoder._model.start(False), 1)[1])  # words found, not all <unk>


def test_a_word_lm_without_a_lexicon_is_refused(files):
    with pytest.raises(LMError, match=r"a word LM needs a lexicon"):
        make_decoder(TOK, files / "bigram.arpa")


@pytest.mark.slow
def test_lm_build_tune_decoder_eval_and_transcribe_with_the_beam(tiny_corpus, tmp_path, capsys):
    """The command-line path: build the corpus's LM, tune on dev, then eval/transcribe pick up the tuned values."""
    import json

    from stt.cli import main as stt_main
    from stt.data.corpus import find_splits, read_librispeech
    from stt.data.training_data import open_training_data
    from stt.train.trainer import Trainer
    from tests.stt.train.test_trainer import tiny_run

    run = tmp_path / "run"
    Trainer(
        tiny_run(epochs=3), open_training_data(str(tiny_corpus), "fbank", progress=False), run, progress=False
    ).fit()
    assert stt_main(["lm", "build", "--data", str(tiny_corpus), "--out", str(tmp_path / "lm"), "--order", "2"]) == 0
    assert "-> " in capsys.readouterr().out
    words = {line.split("\t")[0] for line in (tmp_path / "lm" / "lexicon.txt").read_text().splitlines()}
    lm, lexicon = str(tmp_path / "lm" / "lm.arpa"), str(tmp_path / "lm" / "lexicon.txt")
    assert (
        stt_main(
            [
                "eval",
                "--checkpoint",
                str(run),
                "--data",
                str(tiny_corpus),
                "--decoder",
                "beam",
                "--lm",
                lm,
                "--lexicon",
                lexicon,
                "--errors",
                "100",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"beam 50, lexicon of {len(words)} words, LM weight 1, word score 0" in out
    hyps = [line.split("HYP:", 1)[1].split() for line in out.splitlines() if "HYP:" in line]
    assert hyps and all(w in words for h in hyps for w in h)  # a lexicon decoder only ever writes lexicon words
    assert (
        stt_main(
            [
                "tune-decoder",
                "--checkpoint",
                str(run),
                "--data",
                str(tiny_corpus),
                "--lm",
                lm,
                "--lexicon",
                lexicon,
                "--trials",
                "4",
            ]
        )
        == 0
    )
    tuned = json.loads((run / "decoder.json").read_text())
    assert tuned["lm"] == lm and tuned["dev_wer_beam"] <= 1.5 and set(tuned) >= {"lm_weight", "word_score"}
    assert f"saved in {run / 'decoder.json'}" in capsys.readouterr().out
    assert stt_main(["eval", "--checkpoint", str(run), "--data", str(tiny_corpus), "--decoder", "beam"]) == 0
    assert f"LM weight {tuned['lm_weight']:g}, word score {tuned['word_score']:g}" in capsys.readouterr().out
    utt = read_librispeech(find_splits(tiny_corpus)["test"])[0][0]
    assert stt_main(["transcribe", "--checkpoint", str(run), utt.path, "--decoder", "beam"]) == 0
    path, text = capsys.readouterr().out.rstrip("\n").split("\t")
    assert path == utt.path and all(w in words for w in text.split())
