"""Whether CTC can align a config's output frames with a corpus's letters: one rule, one tolerance.

CTC emits at most one letter per output frame and needs a blank between two equal letters, so an utterance
needs at least ``letters + repeats`` output frames. A model's total stride divides its input frames; too much
of it and the transcript no longer fits. A few unusually fast utterances may be left out of training
(:data:`MAX_INFEASIBLE` of the training split); beyond that the config is infeasible on this corpus.

The trainer checks a config's exact output lengths (:func:`check_feasible`); a search asks once per corpus
for the largest total stride any candidate may have (:func:`max_feasible_stride`).
"""

from __future__ import annotations

from stt.core.errors import ConfigError

MAX_INFEASIBLE = 0.02  # share of the training utterances that may be left out because CTC cannot align them


class InfeasibleError(ConfigError):
    """The model's output frame rate is too low for the corpus's letters (CTC cannot align)."""


def ctc_min_frames(targets: list[list[int]]) -> list[int]:
    """Frames CTC needs per target: one per label plus a blank between repeated labels."""
    return [len(t) + sum(1 for a, b in zip(t, t[1:]) if a == b) for t in targets]


def _too_many(bad: int, total: int) -> bool:
    return bad > MAX_INFEASIBLE * total


def check_feasible(layers, frames: list[int], targets: list[list[int]], fps: float) -> list[int]:
    """The indices of the utterances CTC can align; raise InfeasibleError when too many cannot.

    Args:
        layers: the model's layer config (``stt.model.LayerConfig``): its exact output lengths are used.
        frames: input frames per utterance; targets: letter ids per utterance; fps: input frames per second.
    """
    need = ctc_min_frames(targets)
    ok = [i for i, (n, k) in enumerate(zip(frames, need)) if layers.output_lengths(n) >= k]
    bad = len(frames) - len(ok)
    if _too_many(bad, len(frames)):
        rate = max(k / (n / fps) for n, k in zip(frames, need))
        stride = layers.total_stride
        raise InfeasibleError(
            f"total stride {stride} gives {fps / stride:.1f} output frames/s, but {bad} of {len(frames)} training "
            f"utterances need more (up to {rate:.1f} letters/s incl. repeats); use a total stride <= "
            f"{max(1, int(fps / rate))}"
        )
    return ok


def max_feasible_stride(frames: list[int], targets: list[list[int]], cap: int = 16) -> int:
    """Largest power-of-two total stride (up to ``cap``) at which CTC can align all but the tolerated share.

    0 when not even stride 1 can (features too coarse for the transcripts): no config is feasible.
    """
    need = ctc_min_frames(targets)
    best, s = 0, 1
    while s <= cap:
        if _too_many(sum(1 for n, k in zip(frames, need) if -(-n // s) < k), len(frames)):
            break
        best, s = s, s * 2
    return best
