"""The Jasper / QuartzNet / Citrinet block and the shipped configs of that family.

The reference below is written from the QuartzNet paper's description (Kriman et al. 2019, fig. 1), in
plain PyTorch, independently of ``stt.model.blocks``: R time-channel separable sub-modules (depthwise
conv -> pointwise conv -> BN, then ReLU on all but the last), and a residual 1x1 conv -> BN of the block's
input added before the last ReLU.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from stt import LayerConfigError, STTModel, load_layer_config
from stt.model.blocks import JasperBlock, JasperBlockConfig
from stt.model.network import build_model
from stt.train.run_config import load_run_config


class RefSeparable(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.depthwise = nn.Conv1d(c_in, c_in, kernel, padding=kernel // 2, groups=c_in, bias=False)
        self.pointwise = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x):
        return self.bn(self.pointwise(self.depthwise(x)))


class RefQuartzBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, repeat: int):
        super().__init__()
        self.subs = nn.ModuleList(RefSeparable(c_in if i == 0 else c_out, c_out, kernel) for i in range(repeat))
        self.res_conv = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.res_bn = nn.BatchNorm1d(c_out)

    def forward(self, x):  # one utterance, [1, C, T]
        y = x
        for i, sub in enumerate(self.subs):
            y = sub(y)
            if i < len(self.subs) - 1:
                y = F.relu(y)
        return F.relu(y + self.res_bn(self.res_conv(x)))


def _pair(c_in=12, c_out=16, kernel=7, repeat=3):
    torch.manual_seed(0)
    ref = RefQuartzBlock(c_in, c_out, kernel, repeat)
    ours = JasperBlock(JasperBlockConfig(in_chan=c_in, out_chan=c_out, kernel=kernel, repeat=repeat, separable=True))
    with torch.no_grad():  # BN statistics away from (0, 1), so eval mode is not the identity
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return ref.eval(), ours.eval()


def test_a_quartznet_block_has_the_reference_parameters_and_computes_the_same():
    ref, ours = _pair()
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    ours.load_state_dict(dict(zip(ours.state_dict(), ref.state_dict().values())))  # same order, same shapes
    x = torch.randn(1, 12, 40)
    with torch.no_grad():
        y, lengths = ours(x, None)
        torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)
    assert lengths is None


def test_a_padded_batch_gives_each_utterance_its_frames_alone():
    ref, ours = _pair()
    ours.load_state_dict(dict(zip(ours.state_dict(), ref.state_dict().values())))
    lengths = [40, 23, 6]
    xs = [torch.randn(1, 12, t) for t in lengths]
    batch = torch.zeros(3, 12, 40)  # zero padding: the blocks' contract
    for i, x in enumerate(xs):
        batch[i, :, : x.size(2)] = x[0]
    with torch.no_grad():
        y, out = ours(batch, torch.tensor(lengths))
        assert out.tolist() == lengths
        for i, x in enumerate(xs):
            torch.testing.assert_close(y[i : i + 1, :, : lengths[i]], ref(x), rtol=1e-5, atol=1e-5)
            assert (y[i, :, lengths[i] :] == 0).all()


@pytest.mark.parametrize("context", [0, 5])
def test_squeeze_excitation_pools_over_real_frames_only(context):
    torch.manual_seed(0)
    cfg = JasperBlockConfig(in_chan=8, out_chan=8, kernel=3, repeat=2, stride=2, se=True, se_reduction=2)
    blk = JasperBlock(JasperBlockConfig(**{**cfg.kwargs(), "se_context": context})).eval()
    lengths = [30, 13]
    batch = torch.randn(2, 8, 30) * (torch.arange(30)[None, None] < torch.tensor(lengths)[:, None, None])
    with torch.no_grad():
        y, out = blk(batch, torch.tensor(lengths))
        for i, t in enumerate(lengths):
            alone, n = blk(batch[i : i + 1, :, :t], None)
            torch.testing.assert_close(y[i : i + 1, :, : alone.size(2)], alone, rtol=1e-5, atol=1e-5)
            assert out[i].item() == alone.size(2)
        no_se = JasperBlock(JasperBlockConfig(**{**cfg.kwargs(), "se": False}))
        no_se.load_state_dict({k: v for k, v in blk.state_dict().items() if not k.startswith("se.")})
        assert not torch.allclose(no_se.eval()(batch, torch.tensor(lengths))[0], y)  # the gate acts


@pytest.mark.parametrize(
    "name,params,stride,rf",
    [("quartznet5x5.yaml", 6_713_181, 2, 2937), ("quartznet15x5.yaml", 18_924_381, 2, 8057)],
)
def test_the_shipped_quartznets_have_nemos_parameter_counts_and_rebuild_from_their_files(name, params, stride, rf):
    run = load_run_config(name)
    assert run.frontend == "fbank:64" and run.input_size == 64 and run.input_proj is None and not run.residual
    model = build_model(run, run.input_size, 29)
    assert sum(p.numel() for p in model.parameters()) == params  # NeMo's QuartzNet with 28 letters + blank
    assert (model.config.total_stride, model.config.receptive_field) == (stride, rf)
    again = load_run_config(run.to_yaml())  # the config as written by export, read back
    assert again.to_dict() == run.to_dict()
    assert [p.shape for p in build_model(again, 64, 29).parameters()] == [p.shape for p in model.parameters()]


def test_the_shipped_citrinet_strides_by_8_with_squeeze_excitation_everywhere():
    run = load_run_config("citrinet_256.yaml")
    model = build_model(run, run.input_size, 29)
    assert sum(p.numel() for p in model.parameters()) == 9_621_293
    assert model.config.total_stride == 8 and run.input_size == 80
    assert all(layer.blocks[0].branches[0].se is not None for layer in model.layers)
    x = torch.randn(2, 203, 80)
    y, lengths = model.eval()(x, torch.tensor([203, 100]))
    assert y.shape == (2, 26, 29) and lengths.tolist() == [26, 13]


def test_a_bad_jasper_setting_is_named_by_its_path():
    with pytest.raises(
        LayerConfigError, match=r"layers\[0\].blocks\[0\].branches\[0\].repeat: must be a positive integer, got 0"
    ):
        load_layer_config([[[["jasper_block", {"in_chan": 8, "out_chan": 8, "repeat": 0}]]]])
    with pytest.raises(LayerConfigError, match=r"se_reduction: 16 leaves no SE channels of out_chan 8"):
        load_layer_config([[[["jasper_block", {"in_chan": 8, "out_chan": 8, "se": True, "se_reduction": 16}]]]])
    with pytest.raises(LayerConfigError, match=r"se_context: 4 is even"):
        load_layer_config([[[["jasper_block", {"in_chan": 8, "out_chan": 8, "se": True, "se_context": 4}]]]])


def test_design_note_configs_still_load_and_build_unchanged():
    model = STTModel("seed_base.yaml", input_size=512, input_proj="base", output_size=None)
    assert sum(p.numel() for p in model.parameters()) == 39_644_368
