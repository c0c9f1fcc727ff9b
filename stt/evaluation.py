"""Transcribe a prepared split with a model and score it (corpus-level WER/CER).

Training-time evaluation and ``stt eval`` both call :func:`evaluate_split`
with the run's precision, so ``result.json`` and ``stt eval`` agree on a
device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from stt.batching import FeatureDataset, FrameBudgetBatchSampler, collate
from stt.decoding import greedy_decode
from stt.device import autocast, to_host
from stt.features import FeatureCache
from stt.metrics import Scores, score
from stt.text import LetterTokenizer


@torch.no_grad()
def evaluate_split(
    model: torch.nn.Module,
    cache: FeatureCache,
    tokenizer: LetterTokenizer,
    device: torch.device,
    batch_frames: int,
    precision: str = "auto",
    decoder: Callable[[torch.Tensor, torch.Tensor], list[str]] | None = None,
) -> tuple[Scores, list[str], list[str], list[str]]:
    """Decode every utterance of ``cache`` (greedy, or with ``decoder``) and score it.

    Args:
        model: an STTModel on ``device`` (its train/eval mode is restored afterwards).
        precision: "auto", "bf16" or "fp32", as in the run's training settings.
        decoder: ``(log_probs [B, T', V], lengths [B]) -> transcripts``, e.g. a
            :class:`stt.decoding.BeamDecoder`; None: greedy, argmax-ed on the device.
    Returns:
        ``(scores, ids, references, hypotheses)``, in the cache's utterance order. ``scores.loss`` is
        the CTC loss per reference letter: unlike WER it moves from the first epoch on, while every
        model still decodes to (nearly) all blanks, so it can rank candidates early.
    """
    data = FeatureDataset(cache, tokenizer)
    sampler = FrameBudgetBatchSampler(cache.frames, batch_frames, shuffle=False)
    # its own generator: a DataLoader draws a seed from the global RNG per iterator, so scoring dev would
    # shift every later dropout mask, and a search's probe would make its trial train apart from `stt train`
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator())
    was = model.training
    model.eval()
    hyps = [""] * len(data)
    loss_sum = torch.zeros((), device=device)  # summed on the device, read once at the end
    letters = 0
    for b in loader:
        with autocast(device, precision):
            logits, out_lens = model(b.feats.to(device), b.feat_lens.to(device))  # [B, T', V], [B]
        log_probs = logits.float().log_softmax(-1)  # [B, T', V]
        # grad mode on (nothing here requires grad, so no graph is kept): measured on torch 2.13 CPU, the
        # no-grad ctc_loss left every later bf16 convolution in the process 10-60x slower
        with torch.enable_grad():
            loss_sum += F.ctc_loss(
                log_probs.transpose(0, 1),
                b.targets.to(device),
                out_lens,
                b.target_lens.to(device),
                blank=tokenizer.blank,
                reduction="sum",
                zero_infinity=True,
            )
        letters += int(b.target_lens.sum())
        if decoder is not None:
            for i, text in zip(b.index.tolist(), decoder(log_probs, model.output_lengths(b.feat_lens))):
                hyps[i] = text
            continue
        best = to_host(log_probs.argmax(dim=-1))  # [B, T'] label ids: one host read per batch
        for i, ids in zip(b.index.tolist(), greedy_decode(best, model.output_lengths(b.feat_lens), tokenizer.blank)):
            hyps[i] = tokenizer.decode(ids)
    model.train(was)
    refs = [tokenizer.decode(t) for t in data.targets]  # normalised references
    ids = [u["id"] for u in cache.utterances]
    scores = score(refs, hyps)
    scores.loss = float(to_host(loss_sum)) / max(1, letters)
    return scores, ids, refs, hyps


@torch.no_grad()
def split_log_probs(
    model: torch.nn.Module,
    cache: FeatureCache,
    tokenizer: LetterTokenizer,
    device: torch.device,
    batch_frames: int,
    precision: str = "auto",
) -> tuple[list, list[str]]:
    """A split's log-probabilities, computed once to be decoded many times (decoder tuning, benches).

    Returns:
        ``(batches, references)``: batches of ``(utterance indices, log_probs [B, T', V] on the host,
        lengths [B])``, and the normalised reference of every utterance, in the cache's order.
    """
    data = FeatureDataset(cache, tokenizer)
    sampler = FrameBudgetBatchSampler(cache.frames, batch_frames, shuffle=False)
    was = model.training
    model.eval()
    batches = []
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator())
    for b in loader:  # its own generator, as in evaluate_split: decoding leaves the training RNG alone
        with autocast(device, precision):
            logits, lens = model(b.feats.to(device), b.feat_lens.to(device))  # [B, T', V], [B]
        batches.append((b.index.tolist(), logits.float().log_softmax(-1).cpu(), lens.cpu()))
    model.train(was)
    return batches, [tokenizer.decode(t) for t in data.targets]


def decode_batches(batches: list, decoder: Callable[[torch.Tensor, torch.Tensor], list[str]], n: int) -> list[str]:
    """Transcripts of :func:`split_log_probs`'s batches, in utterance order."""
    hyps = [""] * n
    for index, log_probs, lens in batches:
        for i, text in zip(index, decoder(log_probs, lens)):
            hyps[i] = text
    return hyps
