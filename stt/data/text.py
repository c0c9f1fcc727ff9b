"""Letters for CTC: the tokenizer and the text normalisation it documents.

Vocabulary (the design note's scheme): index 0 is the CTC blank, then space,
apostrophe and the 26 lower-case letters.

Normalisation, applied to every transcript before encoding — and nothing else:
  * lower-case; accents stripped by Unicode decomposition (``café`` -> ``cafe``);
  * typographic apostrophes (``’ ‘ ` ´``) -> ``'``;
  * hyphens and dashes -> space (``well-known`` -> ``well known``);
  * the punctuation marks ``. , ; : ! ? "`` and brackets are removed;
  * runs of whitespace -> one space, trimmed.
Any other character (a digit, ``&``, a non-Latin letter, …) is an error that
names the utterance: it is never dropped silently.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

from stt.core.errors import DataError

BLANK = "<blank>"
LETTERS = [BLANK, " ", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})
_DASHES = re.compile(r"[-‐‑‒–—]")
_REMOVED = re.compile(r"[.,;:!?\"“”()\[\]{}]")


class TextError(DataError):
    """A transcript with characters outside the tokenizer (the message names the utterance)."""


def normalise_text(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = _REMOVED.sub("", _DASHES.sub(" ", text))
    return " ".join(text.split())


class LetterTokenizer:
    """Letters <-> ids, blank at 0."""

    def __init__(self, symbols: list[str] | None = None):
        self.symbols = list(symbols or LETTERS)
        if self.symbols[0] != BLANK:
            raise ValueError(f"tokenizer: symbol 0 must be {BLANK!r}, got {self.symbols[0]!r}")
        self.index = {s: i for i, s in enumerate(self.symbols)}

    blank = 0

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str, utt_id: str = "?") -> list[int]:
        """Normalise and encode; raise TextError naming ``utt_id`` on any unknown character."""
        norm = normalise_text(text)
        bad = sorted({c for c in norm if c not in self.index})
        if bad:
            raise TextError(
                f"utterance {utt_id}: characters {''.join(bad)!r} are not letters, space or apostrophe (in {text!r})"
            )
        return [self.index[c] for c in norm]

    def decode(self, ids) -> str:
        return "".join(self.symbols[i] for i in ids if i != self.blank)

    def save(self, path: str | Path) -> None:
        from stt.core.files import write_text

        write_text(path, json.dumps({"symbols": self.symbols}))

    @classmethod
    def load(cls, path: str | Path) -> LetterTokenizer:
        try:
            symbols = json.loads(Path(path).read_text())["symbols"]
            return cls(symbols)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise TextError(
                f'{path}: not a tokenizer file (expected {{"symbols": [...]}} starting with the blank; {e})'
            ) from None
