"""Transcribe a prepared split with a model and score it (corpus-level WER/CER).

An :class:`Evaluator` scores a model the way its run trains: the same batch budget, the same precision.
Training-time evaluation, ``stt eval``, decoder tuning and a search's beam rescoring all use one, so
``result.json`` and ``stt eval`` agree on a device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from stt.core.device import autocast, to_host
from stt.data.batching import Batch, FeatureDataset, FrameBudgetBatchSampler, collate
from stt.data.features import FeatureCache
from stt.data.text import LetterTokenizer
from stt.decode.greedy import greedy_decode
from stt.train.metrics import Scores, score

Decoder = Callable[[torch.Tensor, torch.Tensor], list[str]]  # (log_probs [B, T', V], lengths [B]) -> transcripts


class Transcripts(NamedTuple):
    scores: Scores  # corpus-level WER/CER, and the CTC loss per reference letter
    ids: list[str]  # utterance ids, in the cache's order
    refs: list[str]  # normalised references
    hyps: list[str]  # the model's transcripts


@dataclass
class Evaluator:
    model: torch.nn.Module  # on ``device``; its train/eval mode is restored after every pass
    tokenizer: LetterTokenizer
    device: torch.device
    batch_frames: int  # input frames per batch (padding included)
    precision: str = "auto"  # "auto", "bf16" or "fp32", as in the run's training settings

    @torch.no_grad()
    def transcribe(self, cache: FeatureCache, decoder: Decoder | None = None) -> Transcripts:
        """Decode every utterance of ``cache`` (greedy, argmax-ed on the device, or with ``decoder``) and score it.

        ``scores.loss`` is the CTC loss per reference letter: unlike WER it moves from the first epoch on, while
        every model still decodes to (nearly) all blanks, so it can rank candidates early.
        """
        data = FeatureDataset(cache, self.tokenizer)
        hyps = [""] * len(data)
        loss_sum = torch.zeros((), device=self.device)  # summed on the device, read once at the end
        letters = 0
        for b, log_probs, out_lens in self._outputs(cache, data):
            loss_sum += self._ctc_loss(b, log_probs, out_lens)
            letters += int(b.target_lens.sum())
            lengths = self.model.output_lengths(b.feat_lens)
            if decoder is not None:
                texts = decoder(log_probs, lengths)
            else:
                best = to_host(log_probs.argmax(dim=-1))  # [B, T'] label ids: one host read per batch
                texts = [self.tokenizer.decode(ids) for ids in greedy_decode(best, lengths, self.tokenizer.blank)]
            for i, text in zip(b.index.tolist(), texts):
                hyps[i] = text
        refs = [self.tokenizer.decode(t) for t in data.targets]  # normalised references
        scores = score(refs, hyps)
        scores.loss = float(to_host(loss_sum)) / max(1, letters)
        return Transcripts(scores, [u["id"] for u in cache.utterances], refs, hyps)

    def score(self, cache: FeatureCache) -> Scores:
        """Greedy WER/CER and CTC loss of a split."""
        return self.transcribe(cache).scores

    @torch.no_grad()
    def log_probs(self, cache: FeatureCache) -> tuple[list, list[str]]:
        """A split's log-probabilities, computed once to be decoded many times (decoder tuning, benches).

        Returns:
            ``(batches, references)``: batches of ``(utterance indices, log_probs [B, T', V] on the host,
            lengths [B])``, and the normalised reference of every utterance, in the cache's order.
        """
        data = FeatureDataset(cache, self.tokenizer)
        batches = [(b.index.tolist(), lp.cpu(), lens.cpu()) for b, lp, lens in self._outputs(cache, data)]
        return batches, [self.tokenizer.decode(t) for t in data.targets]

    def _outputs(self, cache: FeatureCache, data: FeatureDataset) -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
        """The model's outputs over a split, batch by batch: ``(batch, log_probs [B, T', V], lengths [B])``."""
        sampler = FrameBudgetBatchSampler(cache.frames, self.batch_frames, shuffle=False)
        # its own generator: a DataLoader draws a seed from the global RNG per iterator, so scoring dev would
        # shift every later dropout mask, and a search's probe would make its trial train apart from `stt train`
        loader = torch.utils.data.DataLoader(
            data, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator()
        )
        model, device = self.model, self.device
        was = model.training
        model.eval()
        try:
            for b in loader:
                with autocast(device, self.precision):
                    logits, out_lens = model(b.feats.to(device), b.feat_lens.to(device))  # [B, T', V], [B]
                yield b, logits.float().log_softmax(-1), out_lens  # [B, T', V] on the device
        finally:
            model.train(was)

    def _ctc_loss(self, b: Batch, log_probs: torch.Tensor, out_lens: torch.Tensor) -> torch.Tensor:
        """The batch's summed CTC loss, on the device."""
        # grad mode on (nothing here requires grad, so no graph is kept): measured on torch 2.13 CPU, the
        # no-grad ctc_loss left every later bf16 convolution in the process 10-60x slower
        with torch.enable_grad():
            return F.ctc_loss(
                log_probs.transpose(0, 1),  # [T', B, V]
                b.targets.to(self.device),
                out_lens,
                b.target_lens.to(self.device),
                blank=self.tokenizer.blank,
                reduction="sum",
                zero_infinity=True,
            )


def decode_batches(batches: list, decoder: Decoder, n: int) -> list[str]:
    """Transcripts of :meth:`Evaluator.log_probs`'s batches, in utterance order."""
    hyps = [""] * n
    for index, log_probs, lens in batches:
        for i, text in zip(index, decoder(log_probs, lens)):
            hyps[i] = text
    return hyps
