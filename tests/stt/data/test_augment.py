"""SpecAugment: masks stay inside each utterance, have the configured widths, draw on the batch's device,
and are off by default."""

import pytest
import torch

from stt import LayerConfigError
from stt.data.augment import spec_augment
from stt.train.run_config import TrainConfig


def _runs(mask: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool mask."""
    runs, n = [], 0
    for v in [*mask.tolist(), False]:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_masks_are_whole_bands_and_spans_inside_each_utterance_and_no_wider_than_set():
    torch.manual_seed(0)
    lengths = torch.tensor([300, 120, 40, 7])
    x = torch.randn(4, 300, 80) + 5  # no zeros of its own
    for _ in range(50):
        y = spec_augment(x, lengths, freq_masks=2, freq_width=10, time_masks=3, time_width=0.1)
        zero = y == 0  # [B, T, F]
        assert torch.equal(y[~zero], x[~zero])
        for b, n in enumerate(lengths.tolist()):
            band = zero[b, :n].all(0)  # [F]: bins zeroed in every real frame
            span = zero[b].all(1)  # [T]: frames zeroed in every bin
            # every zero is in a band or a span, and no span reaches the padding
            assert torch.equal(zero[b], band[None, :] | span[:, None])
            assert not span[n:].any()
            assert sum(_runs(band)) <= 2 * 10 and all(r <= 2 * 10 for r in _runs(band))
            assert all(r <= 3 * int(0.1 * n) for r in _runs(span))


def test_masks_vary_between_utterances_and_steps_and_repeat_under_a_seed():
    x = torch.randn(8, 200, 80) + 5
    torch.manual_seed(1)
    a = spec_augment(x, None, 2, 15, 2, 0.05) == 0
    b = spec_augment(x, None, 2, 15, 2, 0.05) == 0
    torch.manual_seed(1)
    assert torch.equal(spec_augment(x, None, 2, 15, 2, 0.05) == 0, a)
    assert not torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    assert 0 < a.float().mean() < 0.5


def test_masks_are_drawn_on_the_batchs_device():
    # meta stands in for CUDA: a mask made on the host would raise here, as it would on a GPU
    x = torch.empty(2, 50, 80, device="meta")
    y = spec_augment(x, torch.tensor([50, 30], device="meta"), 2, 15, 2, 0.05)
    assert y.device.type == "meta" and y.shape == x.shape


def test_off_by_default():
    cfg = TrainConfig()
    assert cfg.freq_masks == 0 and cfg.time_masks == 0


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"freq_masks": -1}, "train.freq_masks: must be >= 0, got -1"),
        ({"time_width": 0.7}, "train.time_width: must be in [0, 0.5]"),
        ({"time_masks": 1.5}, "train.time_masks: 1.5 is not"),
    ],
)
def test_bad_settings_name_the_key(kw, words):
    with pytest.raises(LayerConfigError) as e:
        TrainConfig(**kw)
    assert words in str(e.value)
