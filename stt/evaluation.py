"""Transcribe a prepared split with a model and score it (corpus-level WER/CER).

Training-time evaluation and ``stt eval`` both call :func:`evaluate_split`
with the run's precision, so ``result.json`` and ``stt eval`` agree on a
device.
"""

from __future__ import annotations

import torch

from stt.batching import FeatureDataset, FrameBudgetBatchSampler, collate
from stt.decoding import greedy_decode
from stt.device import autocast, to_host
from stt.features import FeatureCache
from stt.metrics import Scores, score
from stt.text import LetterTokenizer


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, cache: FeatureCache, tokenizer: LetterTokenizer, device: torch.device,
                   batch_frames: int, precision: str = "auto") -> tuple[Scores, list[str], list[str], list[str]]:  # fmt: skip
    """Greedy-decode every utterance of ``cache``.

    Args:
        model: an STTModel on ``device`` (its train/eval mode is restored afterwards).
        precision: "auto", "bf16" or "fp32", as in the run's training settings.
    Returns:
        ``(scores, ids, references, hypotheses)``, in the cache's utterance order.
    """
    data = FeatureDataset(cache, tokenizer)
    sampler = FrameBudgetBatchSampler(cache.frames, batch_frames, shuffle=False)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate)
    was = model.training
    model.eval()
    hyps = [""] * len(data)
    for b in loader:
        with autocast(device, precision):
            logits, out_lens = model(b.feats.to(device), b.feat_lens.to(device))  # [B, T', V], [B]
        best = to_host(logits.argmax(dim=-1))  # [B, T'] label ids: one host read per batch
        for i, ids in zip(b.index.tolist(), greedy_decode(best, model.output_lengths(b.feat_lens), tokenizer.blank)):
            hyps[i] = tokenizer.decode(ids)
    model.train(was)
    refs = [tokenizer.decode(t) for t in data.targets]  # normalised references
    ids = [u["id"] for u in cache.utterances]
    return score(refs, hyps), ids, refs, hyps
