"""CTC feasibility: one rule and one tolerance, for a config's exact lengths and for a corpus's stride cap."""

import pytest

from stt.model.layer_config import load_layer_config
from stt.train.feasibility import MAX_INFEASIBLE, InfeasibleError, check_feasible, ctc_min_frames, max_feasible_stride


def test_ctc_min_frames_counts_repeats():
    assert ctc_min_frames([[1, 2, 3], [1, 1, 2, 2, 2]]) == [3, 8]


def test_max_feasible_stride_follows_the_letter_rate():
    frames = [100, 100, 100]  # 1 s each at 100 Hz
    assert max_feasible_stride(frames, [[1, 2] * 10] * 3) == 4  # 20 letters/s: 25 frames/s still aligns
    assert max_feasible_stride(frames, [[1, 2] * 20] * 3) == 2  # 40 letters/s
    assert max_feasible_stride(frames, [[1, 1] * 20] * 3) == 1  # 40 repeats need 79 frames: blanks between them
    assert max_feasible_stride(frames, [[1, 2] * 60] * 3) == 0  # 120 letters/s: nothing aligns, not even stride 1


def _stride(s: int):
    return load_layer_config([[[["conv_block", {"in_chan": 8, "out_chan": 8, "kernel": 1, "stride": s}]]]])


@pytest.mark.parametrize("fast", [2, 3])
def test_the_config_check_and_the_stride_cap_leave_out_the_same_share_of_fast_utterances(fast):
    """100 utterances of 1 s; ``fast`` of them speak 40 letters/s, the rest 20. At stride 4 (25 frames/s) the fast
    ones cannot align: 2 of 100 is within the tolerance, 3 is not, for both checks alike."""
    assert MAX_INFEASIBLE == 0.02
    frames = [100] * 100
    targets = [[1, 2] * 20] * fast + [[1, 2] * 10] * (100 - fast)
    feasible = fast <= MAX_INFEASIBLE * len(frames)
    assert (max_feasible_stride(frames, targets) == 4) == feasible
    if feasible:
        assert check_feasible(_stride(4), frames, targets, fps=100) == list(range(fast, 100))  # the fast ones left out
    else:
        with pytest.raises(InfeasibleError, match=rf"total stride 4 .* {fast} of 100 training utterances need more"):
            check_feasible(_stride(4), frames, targets, fps=100)
