"""Blocks on their own: the lightweight-conv fast path equals its reference; masked BatchNorm."""

import pytest
import torch

from stt.blocks import BLOCKS, AttentionConvBlock, MaskedBatchNorm1d, lightweight_conv_reference


@pytest.mark.parametrize("heads,chans,kernel", [(1, 4, 3), (4, 8, 5), (8, 16, 7)])
def test_lightweight_conv_fast_path_equals_reference(heads, chans, kernel):
    torch.manual_seed(0)
    blk = AttentionConvBlock(chans, n_heads=heads, kernel=kernel, pad=kernel // 2, bias=False).eval()
    x = torch.randn(3, chans, 17)
    y, _ = blk(x, torch.full((3,), 17))
    ref = lightweight_conv_reference(x, torch.softmax(blk.weight, -1), kernel // 2)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_lightweight_kernels_are_softmax_normalised_and_dropconnect_acts_in_training():
    blk = AttentionConvBlock(8, n_heads=2, kernel=5, dropout=0.5, pad=2)
    blk.eval()
    w = blk.normalised_weight()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 1))
    blk.train()
    torch.manual_seed(0)
    assert (blk.normalised_weight() == 0).any()


def test_masked_batchnorm_trains_on_real_frames_only():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10)
    lengths = torch.tensor([10, 4])
    mask = (torch.arange(10)[None] < lengths[:, None]).unsqueeze(1)
    x_padded = x.masked_fill(~mask, 1000.0)  # garbage in the padding must not matter
    bn = MaskedBatchNorm1d(3)
    y = bn(x_padded, mask)
    real = torch.cat([x[0], x[1, :, :4]], dim=1)  # [C, 14] real frames
    ref_bn = torch.nn.BatchNorm1d(3)
    ref = ref_bn(real.T).T
    torch.testing.assert_close(y[0], ref[:, :10], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)


def test_every_block_states_its_parameters():
    for name, cls in BLOCKS.items():
        assert cls.in_key in cls.PARAMS, name
        assert callable(cls.out_width) and callable(cls.convs), name
