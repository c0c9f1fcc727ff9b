"""CTC beam search with a lexicon and an n-gram LM (flashlight-text's decoder, KenLM inside), and the decoder
settings ``stt tune-decoder`` saves in a run directory."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from stt.core.errors import CheckpointError
from stt.core.files import read_user_text
from stt.data.text import LetterTokenizer
from stt.decode.lm import Lexicon, LMError


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ libraries print there directly, past sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class BeamSettings:
    """Beam-search options (flashlight's lexicon decoder); ``stt tune-decoder`` fits the LM weight and word score."""

    beam_size: int = 50  # hypotheses kept after each frame
    beam_threshold: float = 25.0  # hypotheses further than this below the best (log score) are dropped
    lm_weight: float = 1.0  # weight of the LM's log10 probability against the acoustic log-probabilities
    word_score: float = 0.0  # added per word: > 0 favours more, shorter words
    unk_score: float = float("-inf")  # score of a word outside the lexicon (-inf: never; lexicon-free: unused)
    sil_score: float = 0.0  # added per word separator


class BeamDecoder:
    """CTC beam search over letters, constrained to a lexicon's words, with an optional KenLM model.

    Without a lexicon it searches letter sequences freely (no LM then: a word LM needs word
    boundaries it can look up). Emissions are log-probabilities ``[B, T, V]`` on the host.
    """

    def __init__(
        self,
        tokenizer: LetterTokenizer,
        lexicon: Lexicon | None = None,
        lm: str | Path | None = None,
        settings: BeamSettings | None = None,
        lm_upper: bool = False,
    ):
        from flashlight.lib.text import decoder as fl
        from flashlight.lib.text.dictionary import Dictionary

        self.tokenizer, self.lexicon, self.lm, self.settings = tokenizer, lexicon, lm, settings or BeamSettings()
        s = self.settings
        sil, blank, V = tokenizer.index[" "], tokenizer.blank, len(tokenizer)
        if lexicon is None:
            if lm is not None:
                raise LMError(f"{lm}: a word LM needs a lexicon (--lexicon FILE, or auto for the LM's own words)")
            opts = fl.LexiconFreeDecoderOptions(
                beam_size=s.beam_size,
                beam_size_token=V,
                beam_threshold=s.beam_threshold,
                lm_weight=0.0,
                sil_score=s.sil_score,
                log_add=False,
                criterion_type=fl.CriterionType.CTC,
            )
            self._decoder = fl.LexiconFreeDecoder(opts, fl.ZeroLM(), sil, blank, [])
            self._words = None
            return
        self._words = Dictionary(["<unk>", *lexicon.words])
        if lm is None:
            model = fl.ZeroLM()
        else:
            from flashlight.lib.text.decoder.kenlm import KenLM

            # KenLM maps each of our words to its own vocabulary by string: the LibriSpeech LMs are upper case
            lookup = Dictionary(["<unk>", *(w.upper() if lm_upper else w for w in lexicon.words)])
            try:
                with _quiet_stderr():  # KenLM draws a progress bar of stars on fd 2
                    model = KenLM(str(lm), lookup)
            except Exception as e:
                raise LMError(f"{lm}: KenLM cannot load it ({' '.join(str(e).split())[:200]})") from None
        # Each word is spelt with the separator after it, so a word ends on a space. Without it a word
        # would end on the first frame of its last letter, and the decoder (whose root node loops on
        # the separator only) could not account for that letter's repeated frames: it then fares
        # worse than greedy decoding. __call__ appends a separator frame so the last word ends too.
        trie = fl.Trie(V, sil)
        start = model.start(False)
        for i, word in enumerate(lexicon.words, 1):
            _, score = model.score(start, i)  # unigram score, smeared up the trie so the beam sees it early
            trie.insert([*lexicon.spellings[word], sil], i, score)
        trie.smear(fl.SmearingMode.MAX)
        opts = fl.LexiconDecoderOptions(
            beam_size=s.beam_size,
            beam_size_token=V,
            beam_threshold=s.beam_threshold,
            lm_weight=s.lm_weight,
            word_score=s.word_score,
            unk_score=s.unk_score,
            sil_score=s.sil_score,
            log_add=False,
            criterion_type=fl.CriterionType.CTC,
        )
        self._decoder = fl.LexiconDecoder(opts, trie, model, sil, blank, 0, [], False)
        self._model = model  # the decoder holds it by reference

    def describe(self) -> str:
        s = self.settings
        if self._words is None:
            return f"beam {s.beam_size}, lexicon-free"
        lm = f"LM weight {s.lm_weight:g}, word score {s.word_score:g}" if self.lm else "no LM"
        return f"beam {s.beam_size}, lexicon of {len(self.lexicon.words)} words, {lm}"

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Transcripts, one per utterance.

        Args:
            log_probs: ``[B, T, V]`` log-probabilities (any device and float type; decoded on the host).
            lengths: ``[B]`` real frames of each utterance.
        """
        em = log_probs.detach().float().cpu()  # [B, T, V]
        B, T, V = em.shape
        if self._words is not None:
            # one more frame, certainly a separator (log-prob 0; the rest far below), for the last word to end on
            end = torch.full((B, V), -1e4)
            end[:, self.tokenizer.index[" "]] = 0.0
            em = torch.cat([em, end[:, None]], dim=1)  # [B, T + 1, V]
            em[torch.arange(B), lengths.cpu().long()] = end  # right after each utterance's real frames
            T += 1
        em = em.contiguous()
        out = []
        for b, n in enumerate(lengths.tolist()):
            n = int(n) + (self._words is not None)
            result = self._decoder.decode(em.data_ptr() + 4 * b * T * V, n, V)[0]
            if self._words is None:
                ids = [t for t in torch.unique_consecutive(torch.tensor(result.tokens)).tolist() if t >= 0]
                out.append(" ".join(self.tokenizer.decode(ids).split()))
            else:
                out.append(" ".join(self._words.get_entry(w) for w in result.words if w > 0))
        return out


TUNED = "decoder.json"  # in a run directory: the LM, lexicon, LM weight and word score `stt tune-decoder` chose


def read_tuned(run_dir: str | Path) -> dict:
    """The decoder settings ``stt tune-decoder`` saved in a run directory (empty when there are none)."""
    path = Path(run_dir) / TUNED
    if not path.exists():
        return {}
    text = read_user_text(path, CheckpointError)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); delete it or run `stt tune-decoder` again") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected an object of decoder settings")
    for key, value in data.items():  # what tune-decoder writes; a hand-edited value is checked here, once
        kind = _TUNED_KINDS.get(key)
        if kind is None or value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        number = number and (math.isfinite(value) or (key == "unk_score" and value == -math.inf))  # -inf: never
        ok = {
            "text": isinstance(value, str),
            "count": number and float(value).is_integer() and value >= 1,
            "number": number,
        }
        if not ok[kind]:
            expected = {"text": "a path", "count": "a whole number >= 1", "number": "a number"}[kind]
            raise CheckpointError(
                f"{path}: {key}: {value!r} is not {expected}; fix it, or run `stt tune-decoder` again"
            )
    return data


_TUNED_KINDS = {
    "lm": "text",
    "lexicon": "text",
    "beam_size": "count",
    "lm_weight": "number",
    "word_score": "number",
    "unk_score": "number",
}


def make_decoder(
    tokenizer: LetterTokenizer,
    lm: str | Path | None = None,
    lexicon: str | Path | None = None,
    settings: BeamSettings | None = None,
) -> BeamDecoder:
    """A beam decoder from files, each checked first (one line naming the file and line on a problem).

    Args:
        lm: an ARPA file or KenLM binary, or None (no LM).
        lexicon: a lexicon file, ``"auto"`` (the LM's own words, spelt letter by letter), or None
            (lexicon-free: letter sequences, and then no LM).
    """
    from stt.decode.lm import lexicon_from_words, read_lexicon, read_lm_vocabulary

    info = read_lm_vocabulary(lm, tokenizer) if lm is not None else None
    if lexicon == "auto":
        if info is None:
            raise LMError(
                f"--lexicon auto takes the words of an ARPA LM{'' if lm is None else f'; {lm} is a KenLM binary'}: "
                "pass --lm FILE.arpa, or a lexicon file"
            )
        lex = lexicon_from_words(info.unigrams, tokenizer, str(lm))
    else:
        lex = read_lexicon(lexicon, tokenizer) if lexicon is not None else None
    return BeamDecoder(tokenizer, lex, lm, settings, lm_upper=bool(info and info.upper))
