import pytest

from stt.data.text import LETTERS, LetterTokenizer, TextError, normalise_text


def test_vocabulary_is_blank_space_apostrophe_letters():
    assert LETTERS[0] == "<blank>" and LETTERS[1:3] == [" ", "'"] and len(LETTERS) == 29


@pytest.mark.parametrize(
    "raw,norm",
    [
        ("HELLO  World", "hello world"),
        ("Café’s well-known.", "cafe's well known"),
        ("“Yes,” he said!", "yes he said"),
    ],
)
def test_documented_normalisation(raw, norm):
    assert normalise_text(raw) == norm


def test_round_trip_and_unknown_characters_name_the_utterance(tmp_path):
    tok = LetterTokenizer()
    assert tok.decode(tok.encode("It's OK")) == "it's ok"
    with pytest.raises(TextError, match=r"utterance 84-121-0003: characters '&123'"):
        tok.encode("page 12 & 13", "84-121-0003")
    tok.save(tmp_path / "t.json")
    assert LetterTokenizer.load(tmp_path / "t.json").symbols == tok.symbols
