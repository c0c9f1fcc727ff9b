"""Blocks on their own: the lightweight-conv fast path equals its reference; masked BatchNorm."""

import dataclasses

import pytest
import torch

from stt.model.blocks import BLOCKS, AttentionConvBlock, MaskedBatchNorm1d, lightweight_conv_reference


@pytest.mark.parametrize("heads,chans,kernel", [(1, 4, 3), (4, 8, 5), (8, 16, 7)])
def test_lightweight_conv_fast_path_equals_reference(heads, chans, kernel):
    torch.manual_seed(0)
    blk = AttentionConvBlock.of(in_chan=chans, n_heads=heads, kernel=kernel, bias=False).eval()
    x = torch.randn(3, chans, 17)
    y, _ = blk(x, torch.full((3,), 17))
    ref = lightweight_conv_reference(x, torch.softmax(blk.weight, -1), kernel // 2)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_lightweight_kernels_are_softmax_normalised_and_dropconnect_acts_in_training():
    blk = AttentionConvBlock.of(in_chan=8, n_heads=2, kernel=5, dropout=0.5)
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


@pytest.mark.parametrize("btype", list(BLOCKS))
def test_every_block_config_documents_each_field_and_its_defaults_build_the_block(btype):
    cls = BLOCKS[btype]
    specs = dataclasses.fields(cls.Config)
    assert cls.Config.in_key in [f.name for f in specs]
    assert all(f.metadata["doc"] for f in specs), "every field says what it is"
    required = {f.name: 8 for f in specs if f.metadata["required"]}
    cfg = cls.Config(**required)  # the defaults alone make a working block
    blk = cls(cfg)
    y, lengths = blk(torch.randn(2, 8, 20), torch.tensor([20, 11]))
    assert y.shape[1] == cfg.out_width() and lengths.tolist() == [20 // cfg.stride, -(-11 // cfg.stride)]
    assert all(g.pad == g.dil * (g.kernel - 1) // 2 for g in cfg.convs()), "left-out paddings are 'same'"


@pytest.mark.parametrize("p", [0.05, 0.25, 0.5])
def test_cpu_dropout_fast_path_keeps_1_minus_p_and_scales_like_the_native_one(p):
    from stt.model.blocks import Dropout, keep_mask

    torch.manual_seed(0)
    n = 400_000
    kept = keep_mask(torch.Size([n]), p).float().mean().item()
    assert abs(kept - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5  # five binomial standard deviations
    drop = Dropout(p).train()
    x = torch.randn(8, 50, 100, requires_grad=True)
    y = drop(x)
    on = y != 0
    torch.testing.assert_close(y[on], x[on] / (1 - p))  # kept values scaled as nn.Dropout scales them
    y.sum().backward()
    torch.testing.assert_close(x.grad, on.float() / (1 - p))  # gradient flows through kept entries only
    assert torch.equal(drop.eval()(x), x)
    # neighbouring 16-bit lanes of one 64-bit draw are independent: P(both kept) = (1 - p)^2
    pairs = keep_mask(torch.Size([n // 2, 2]), p)
    both = (pairs[:, 0] & pairs[:, 1]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * ((1 - p) ** 2 * (1 - (1 - p) ** 2) / (n // 2)) ** 0.5


@pytest.mark.parametrize("btype", list(BLOCKS))
def test_every_block_returns_zero_padding_for_zero_padding(btype):
    # the contract the blocks rely on instead of masking their inputs
    from stt import load_layer_config
    from tests.stt.model.test_network import branch

    torch.manual_seed(0)
    cfg = load_layer_config(
        [[[branch(btype, 8, kernel=5, stride=2 if btype not in ("attention_conv_block", "feed_forward") else 1)]]],
        in_width=8,
    )
    ((name, kw),) = cfg.layers[0][0]
    blk = BLOCKS[name].of(**kw).train()
    lengths = torch.tensor([30, 17, 4])
    x = torch.randn(3, 8, 30) * (torch.arange(30)[None, None] < lengths[:, None, None])
    y, out_lengths = blk(x, lengths)
    pad = torch.arange(y.size(2))[None, None] >= out_lengths[:, None, None]
    assert (y.masked_select(pad.expand_as(y)) == 0).all() and (y.masked_select(~pad.expand_as(y)) != 0).any()
