"""Lexicons and n-gram language models for beam-search decoding: read, check, build.

A lexicon is a text file, one word a line: ``word`` alone (spelt by its letters) or ``word w o r d``
(the spelling as space-separated symbols of the model's alphabet, ``'`` included). An LM is an ARPA
file, or a KenLM binary made from one; the official LibriSpeech LMs (upper case) work as they are.

``stt lm build`` makes both from a corpus's training transcripts: the lexicon of every word seen, and
an ARPA model estimated by NLTK (Kneser-Ney interpolated for order >= 2; add-one unigrams for order 1,
the right model for the built-in corpus, whose sentences are random word sequences). NLTK is slow on
millions of sentences: for a large corpus, pass a ready-made ARPA file instead.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stt.core.errors import DataError
from stt.data.text import LetterTokenizer, normalise_text

log = logging.getLogger(__name__)
SPECIAL = ("<s>", "</s>", "<unk>")
_KENLM_MAGIC = b"mmap lm http://kheafield.com/code"


class LMError(DataError):
    """A lexicon or language model that cannot be used with this model (the message names file and line)."""


@dataclass
class Lexicon:
    spellings: dict[str, list[int]]  # word -> symbol ids of its spelling (no word separator)

    @property
    def words(self) -> list[str]:
        return list(self.spellings)


def _symbols(tokenizer: LetterTokenizer) -> str:
    return "".join(s for s in tokenizer.symbols[1:] if s != " ")


def read_lexicon(path: str | Path, tokenizer: LetterTokenizer) -> Lexicon:
    """A lexicon file -> word spellings in the tokenizer's ids; a symbol outside its alphabet names file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LMError(f"{path}: lexicon not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LMError(f"{path}: not a readable text lexicon ({e})") from None
    alphabet = _symbols(tokenizer)
    spellings: dict[str, list[int]] = {}
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        word, spelling = fields[0], (fields[1:] or list(fields[0]))
        if spelling[-1] == "|":  # wav2letter/torchaudio lexicons end each spelling with the word separator
            spelling = spelling[:-1]
        bad = [s for s in spelling if s not in tokenizer.index or s in (" ", tokenizer.symbols[0])]
        if bad or not spelling:
            raise LMError(
                f"{path}:{n}: word {word!r}: {'symbol ' + repr(bad[0]) if bad else 'empty spelling'} is not "
                f"in the model's alphabet ({alphabet}); expected 'word' or 'word w o r d'"
            )
        spellings.setdefault(word, [tokenizer.index[s] for s in spelling])
    if not spellings:
        raise LMError(f"{path}: no words (expected one word a line: 'word' or 'word w o r d')")
    return Lexicon(spellings)


@dataclass
class ArpaInfo:
    order: int
    unigrams: list[str]  # the LM's vocabulary, special tokens included
    upper: bool  # written in upper case (the LibriSpeech LMs): words are looked up upper-cased


def read_lm_vocabulary(path: str | Path, tokenizer: LetterTokenizer) -> ArpaInfo | None:
    """Check an LM file and return its vocabulary (None for a KenLM binary, whose words KenLM checks).

    An ARPA file must start with ``\\data\\`` and ``ngram N=count`` lines; every unigram (special tokens
    aside) must be spelt in the model's alphabet, so an LM of another language or alphabet is refused
    here, naming the first such line, instead of decoding to nothing.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_KENLM_MAGIC))
    except FileNotFoundError:
        raise LMError(f"{path}: language model not found") from None
    except OSError as e:
        raise LMError(f"{path}: cannot read the language model ({e})") from None
    if head == _KENLM_MAGIC:
        return None
    order, words, section = 0, [], None
    alphabet = set(_symbols(tokenizer))
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if section is None:
                    if not line:
                        continue
                    if line != "\\data\\":
                        raise LMError(
                            f"{path}:{n}: not an ARPA language model (expected '\\data\\' first, got "
                            f"{line[:40]!r}); pass an ARPA file or a KenLM binary"
                        )
                    section = "data"
                elif section == "data":
                    if line.startswith("ngram "):
                        try:
                            order = max(order, int(line[6:].split("=")[0]))
                        except ValueError:
                            raise LMError(f"{path}:{n}: expected 'ngram N=count', got {line[:40]!r}") from None
                    elif line == "\\1-grams:":
                        section = "1"
                    elif line:
                        raise LMError(f"{path}:{n}: expected 'ngram N=count' or '\\1-grams:', got {line[:40]!r}")
                elif section == "1":
                    if not line:
                        continue
                    if line.startswith("\\"):
                        break
                    fields = line.split()
                    if len(fields) < 2:
                        raise LMError(f"{path}:{n}: expected 'log10prob word [backoff]', got {line[:40]!r}")
                    word = fields[1]
                    if word not in SPECIAL and word.lower() not in SPECIAL:
                        bad = sorted(set(word.lower()) - alphabet)
                        if bad:
                            raise LMError(
                                f"{path}:{n}: LM word {word!r} has {''.join(bad)!r}, outside the model's "
                                f"alphabet ({''.join(sorted(alphabet))}): an LM of another alphabet or "
                                "text normalisation (build one with `stt lm build`)"
                            )
                    words.append(word)
    except UnicodeDecodeError:
        raise LMError(f"{path}: not an ARPA language model (not UTF-8 text) nor a KenLM binary") from None
    if not order or not words:
        raise LMError(f"{path}: not an ARPA language model (no '\\data\\' counts or no '\\1-grams:' section)")
    plain = [w for w in words if w not in SPECIAL and w.lower() not in SPECIAL]
    upper = bool(plain) and all(w == w.upper() for w in plain) and any(w != w.lower() for w in plain)
    return ArpaInfo(order, words, upper)


def lexicon_from_words(words: list[str], tokenizer: LetterTokenizer, source: str) -> Lexicon:
    """Spell each word by its letters (``--lexicon auto``: the LM's vocabulary)."""
    spellings = {}
    for w in words:
        if w in SPECIAL or w.lower() in SPECIAL:
            continue
        w = w.lower()
        if all(c in tokenizer.index and c != " " for c in w):
            spellings[w] = [tokenizer.index[c] for c in w]
    if not spellings:
        raise LMError(f"{source}: no word spelt in the model's alphabet to make a lexicon from")
    return Lexicon(spellings)


# --- building --------------------------------------------------------------------------

LM_FILE, LEXICON_FILE = "lm.arpa", "lexicon.txt"  # what `stt lm build` writes into DATA/lm


@dataclass
class BuiltLM:
    split: str  # the training split the transcripts came from
    sentences: int
    words: int  # distinct words: the lexicon's size
    lm: Path
    lexicon: Path


def build_lm(data_dir: str | Path, order: int = 1, split: str | None = None, out: str | Path | None = None) -> BuiltLM:
    """A lexicon and an ARPA LM of a corpus's training transcripts, written into ``out`` (default ``DATA/lm``)."""
    from stt.core.files import make_dir, write_text

    name, sentences = training_sentences(data_dir, split)
    out = Path(out or Path(data_dir) / "lm")
    arpa = build_arpa(sentences, order)  # every check and all the work before the first write
    make_dir(out)
    write_text(out / LEXICON_FILE, lexicon_text(sentences))
    write_text(out / LM_FILE, arpa)
    words = len({w for s in sentences for w in s})
    return BuiltLM(name, len(sentences), words, out / LM_FILE, out / LEXICON_FILE)


def corpus_lm(data_dir: str | Path) -> tuple[str, str]:
    """The corpus's own lexicon and unigram LM (``DATA/lm``, as ``stt lm build`` writes them), built when absent.

    Returns absolute ``(lm, lexicon)`` paths. The built-in corpus's sentences are random word sequences, so a
    unigram is its right LM; a real corpus passes its own LM instead.
    """
    out = Path(data_dir) / "lm"
    lm, lexicon = out / LM_FILE, out / LEXICON_FILE
    if not (lm.exists() and lexicon.exists()):
        built = build_lm(data_dir, 1)
        log.info("built a lexicon and a unigram LM from the training transcripts: %s, %s", built.lexicon, built.lm)
    return str(lm.resolve()), str(lexicon.resolve())


def training_sentences(data_dir: str | Path, split: str | None = None) -> tuple[str, list[list[str]]]:
    """(split name, normalised word lists) of a corpus's training transcripts."""
    from stt.data.corpus import find_splits, read_split, resolve_split

    splits = find_splits(data_dir)
    name = resolve_split(splits, "train", split)
    utts, _ = read_split(splits[name])
    tok = LetterTokenizer()
    sentences = []
    for u in utts:
        tok.encode(u.text, u.id)  # a transcript outside the alphabet is named, as in training
        sentences.append(normalise_text(u.text).split())
    return name, [s for s in sentences if s]


def build_arpa(sentences: list[list[str]], order: int) -> str:
    """An ARPA model of ``sentences``, estimated by NLTK; returns the file's text.

    Order 1: add-one unigrams (``</s>`` and ``<unk>`` included). Order >= 2: interpolated Kneser-Ney,
    written as a back-off model: each seen n-gram's interpolated probability, and for each context
    the back-off weight that gives unseen words the rest of the mass in proportion to the lower order.
    """
    from nltk.lm import KneserNeyInterpolated, Laplace
    from nltk.lm.preprocessing import padded_everygram_pipeline

    if order < 1:
        raise LMError(f"--order {order}: expected an integer >= 1")
    if order == 1:  # NLTK pads nothing at order 1: the sentence end is a word of its own
        sentences = [s + ["</s>"] for s in sentences]
    train, vocab = padded_everygram_pipeline(order, sentences)
    lm = (Laplace if order == 1 else KneserNeyInterpolated)(order)
    lm.fit(train, vocab)
    unk = lm.vocab.unk_label

    def name(w: str) -> str:
        return "<unk>" if w == unk else w

    def prob(w: str, ctx: tuple) -> float:
        return lm.score(w, ctx)

    grams: list[dict[tuple, float]] = []
    unigrams = {(w,): prob(w, ()) for w in lm.vocab if w != "<s>"}
    unigrams[("<s>",)] = 0.0
    grams.append(unigrams)
    for n in range(2, order + 1):
        table = {}
        for ctx in lm.counts[n]:
            for w in lm.counts[n][ctx]:
                table[(*ctx, w)] = prob(w, ctx)
        grams.append(table)
    backoff: dict[tuple, float] = {}
    for n in range(2, order + 1):
        seen: dict[tuple, list[str]] = {}
        for g in grams[n - 1]:
            seen.setdefault(g[:-1], []).append(g[-1])
        for ctx, ws in seen.items():
            here = sum(grams[n - 1][(*ctx, w)] for w in ws)
            lower = sum(prob(w, ctx[1:]) for w in ws)
            backoff[ctx] = max(1e-12, 1.0 - here) / max(1e-12, 1.0 - lower)

    def log10(p: float) -> str:
        return f"{math.log10(p):.6f}" if p > 0 else "-99"

    top = max(order, 2)  # KenLM loads bigram models and up: a unigram model is a bigram model without bigrams
    grams += [{}] * (top - order)
    out = ["\\data\\"] + [f"ngram {n}={len(grams[n - 1])}" for n in range(1, top + 1)] + [""]
    for n in range(1, top + 1):
        out.append(f"\\{n}-grams:")
        for g, p in sorted(grams[n - 1].items()):
            line = f"{log10(p)}\t{' '.join(name(w) for w in g)}"
            if n < top:
                line += f"\t{math.log10(backoff.get(g, 1.0)):.6f}"
            out.append(line)
        out.append("")
    out.append("\\end\\")
    return "\n".join(out) + "\n"


def lexicon_text(sentences: list[list[str]]) -> str:
    """Every word seen, most frequent first, with its spelling."""
    counts = Counter(w for s in sentences for w in s)
    return "".join(f"{w}\t{' '.join(w)}\n" for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
