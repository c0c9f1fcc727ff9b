"""STTModel: parameter count, lengths through strides, every block type, padding invariance."""

import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stt import BLOCKS, LayerConfigError, STTModel, load_layer_config


def test_seed_base_parameter_count_and_output_lengths():
    model = STTModel("seed_base.yaml", input_size=512, input_proj="base", output_size=None).eval()
    assert sum(p.numel() for p in model.parameters()) == 39_644_368
    with torch.no_grad():
        for t, expected in [(1000, 250), (1001, 251)]:
            y, lengths = model(torch.randn(1, t, 512))
            assert y.shape == (1, expected, 512) and lengths.tolist() == [expected]
            assert model.output_lengths(torch.tensor([t])).tolist() == [expected]


def test_residual_only_where_shapes_match():
    model = STTModel("seed_base.yaml", input_size=80)
    assert [layer.residual for layer in model.layers] == [True, False, True, False, True, True]
    assert [layer.residual for layer in STTModel("seed_base.yaml", residual=False).layers] == [False] * 6


def branch(btype, width, kernel=3, stride=1, dil=1, k=1, heads=2, out=None):
    out = out or width
    if btype == "conv_block":
        return [btype, dict(out_chan=out, kernel=kernel, stride=stride, dil=dil, k=k)]
    if btype == "separable_conv_block":
        return [btype, dict(out_chan=out, kernel=kernel, stride=stride, dil=dil, k=k)]
    if btype == "conv_attention_conv_block":
        return [btype, dict(out_chan=out, kernel_conv=kernel, stride_conv=stride, dil_conv=dil, k=k, n_heads=heads)]
    if btype == "attention_conv_block":
        return [btype, dict(n_heads=heads, kernel=kernel)]
    if btype == "jasper_block":  # k=2 stands for the QuartzNet/Citrinet form: separable, with SE
        sep = dict(separable=True, se=True, se_reduction=2) if k == 2 else {}
        return [btype, dict(out_chan=out, repeat=2, kernel=kernel, stride=stride, dil=dil, **sep)]
    return [btype, dict(output_size=out, d_ff=2 * width)]


# kernel, dilation, stride sweep (every "same"-length combination of these)
GEOMS = [(k, d, s) for k, d, s in itertools.product([1, 2, 3, 5, 7], [1, 2, 3], [1, 2, 3]) if d * (k - 1) % 2 == 0]


def _lengths_agree(kernel, dil, stride, longest):
    # one layer per strided block type, so lengths go through the rounding three times
    types = ["conv_block", "separable_conv_block", "conv_attention_conv_block", "jasper_block"]
    cfg = [[[branch(t, 4, kernel, stride, dil)]] for t in types]
    cfg[0][0][0][1]["in_chan"] = 4
    model = STTModel(cfg, input_size=4, input_proj=None).eval()
    with torch.no_grad():
        for t in range(1, longest + 1):
            y, lengths = model(torch.randn(1, t, 4))
            assert y.size(1) == lengths.item() == model.output_lengths(torch.tensor([t])).item(), t


@pytest.mark.slow
@pytest.mark.parametrize("kernel,dil,stride", GEOMS)
def test_output_lengths_match_real_lengths_for_1_to_400(kernel, dil, stride):
    _lengths_agree(kernel, dil, stride, 400)


@pytest.mark.parametrize("kernel,dil,stride", [(3, 1, 2), (5, 3, 3), (2, 2, 1)])
def test_output_lengths_match_real_lengths_through_three_strides(kernel, dil, stride):
    # the rounding repeats with period stride**3 <= 27: 1..60 frames cover it twice
    _lengths_agree(kernel, dil, stride, 60)


CASES = [
    (b, k, par, s)
    for b in BLOCKS
    for k in (1, 2)
    for par in (1, 2)
    for s in (1, 2)
    if not (b in ("attention_conv_block", "feed_forward") and (k == 2 or s == 2))
]


@pytest.mark.parametrize("btype,k,parallel,stride", CASES)
def test_every_block_builds_runs_forward_and_backward(btype, k, parallel, stride):
    width = 8
    block = [branch(btype, width, kernel=3, stride=stride, dil=1 + i, k=k) for i in range(parallel)]
    cfg = [[block, [["feed_forward", {"output_size": width, "d_ff": 16}]]], [[branch(btype, width, k=k)]]]
    cfg[0][0][0][1][BLOCKS[btype].Config.in_key] = width
    model = STTModel(cfg, input_size=5, input_proj="base", output_size=7)
    x = torch.randn(3, 23, 5, requires_grad=True)
    lengths = torch.tensor([23, 17, 9])
    y, out_lengths = model(x, lengths)
    assert y.shape == (3, model.output_lengths(torch.tensor(23)).item(), 7)
    assert out_lengths.tolist() == model.output_lengths(lengths).tolist()
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _assert_padding_invariant(model, feat=6, lengths=(31, 12, 5)):
    model.eval()
    torch.manual_seed(1)
    xs = [torch.randn(t, feat) for t in lengths]
    batch = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True, padding_value=3.0)  # padding is not zeros
    with torch.no_grad():
        y, out_lengths = model(batch, torch.tensor(lengths))
        for i, x in enumerate(xs):
            alone, alone_len = model(x[None])
            assert alone_len.item() == out_lengths[i].item()
            torch.testing.assert_close(y[i, : alone_len.item()], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("btype", list(BLOCKS))
def test_padding_never_changes_real_frames_in_eval(btype):
    torch.manual_seed(0)
    strided = btype not in ("attention_conv_block", "feed_forward")
    cfg = [
        [
            [
                branch(btype, 8, kernel=5, stride=2 if strided else 1),
                branch(btype, 8, kernel=3, stride=2 if strided else 1),
            ],
            [["feed_forward", {"output_size": 8, "d_ff": 16}]],
        ],
        [[branch(btype, 8, kernel=3, dil=1)]],
    ]
    cfg[0][0][0][1][BLOCKS[btype].Config.in_key] = 8
    model = STTModel(cfg, input_size=6, input_proj="base", output_size=5)
    # fresh BatchNorm has running stats (0, 1); train a step so they are not trivial
    model.train()
    model(torch.randn(4, 40, 6) * 3 + 1, torch.tensor([40, 30, 20, 10]))
    _assert_padding_invariant(model)


def test_seed_base_padding_invariance():
    _assert_padding_invariant(STTModel("seed_base.yaml", input_size=6), lengths=(37, 9))


# --- property-based: random valid configs always build, run, and agree on lengths -------------


@st.composite
def random_configs(draw):
    width = draw(st.sampled_from([4, 8, 12]))
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        blocks = []
        for _ in range(draw(st.integers(1, 2))):
            stride = draw(st.sampled_from([1, 1, 2]))
            branches = []
            for _ in range(draw(st.integers(1, 3))):
                btype = draw(st.sampled_from(list(BLOCKS)))
                if btype in ("attention_conv_block", "feed_forward"):
                    stride = 1 if not branches else stride
                if stride > 1 and btype in ("attention_conv_block", "feed_forward"):
                    btype = "conv_block"
                kernel = draw(st.sampled_from([1, 3, 5]))
                dil = draw(st.sampled_from([1, 2]))
                k = draw(st.sampled_from([1, 2]))
                heads = draw(st.sampled_from([1, 2, 4]))
                branches.append(branch(btype, width, kernel, stride, dil, k, heads))
            blocks.append(branches)  # input widths are derived by the loader
        blocks.append([["feed_forward", {"output_size": width, "d_ff": 8}]])
        layers.append(blocks)
    layers[0][0][0][1]["in_chan" if layers[0][0][0][0] != "feed_forward" else "input_size"] = width
    return layers


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_configs(), st.integers(1, 60))
def test_random_valid_configs_build_run_and_track_lengths(layers, t):
    try:
        cfg = load_layer_config(layers)
    except LayerConfigError as e:
        # the generator can draw parallel branches with different strides or heads that don't
        # divide a GLU-halved width; those must be rejected cleanly, never reach torch
        assert "stride" in str(e) or "n_heads" in str(e) or "GLU" in str(e), str(e)
        return
    model = STTModel(cfg, input_size=3, input_proj="base", output_size=5)
    x = torch.randn(2, t, 3)
    y, lengths = model(x, torch.tensor([t, max(1, t // 2)]))
    assert y.size(1) == model.output_lengths(torch.tensor(t)).item() == lengths[0].item()
    y.sum().backward()


def test_input_proj_none_requires_matching_width():
    cfg = [[[["conv_block", {"in_chan": 8, "out_chan": 8}]]]]
    with pytest.raises(
        LayerConfigError, match=r"layers\[0\].blocks\[0\].branches\[0\].in_chan: 8, but the input to this block has 80"
    ):
        STTModel(cfg, input_size=80, input_proj=None)
    with pytest.raises(LayerConfigError, match="input_proj: unknown projection 'big'"):
        STTModel(cfg, input_size=8, input_proj="big")


def test_print_model_shows_architecture():
    text = str(STTModel("seed_base.yaml"))
    # each branch's type, widths, kernel, dilation, stride, heads; the merge; the residual
    assert "ConvBlock(\n" in text and "512->512, kernel=3, stride=1, dil=3, groups=1\n" in text
    assert "512->512, kernel=3, stride=2, dil=1" in text  # the strided layers
    assert "AttentionConvBlock(512->512, n_heads=8, kernel=5, dropconnect=0.25, bias=True)" in text
    assert "Parallel(\n          concat of 3" in text and "FeedForward(\n              1536->512, d_ff=2048" in text
    assert "residual=True" in text
    glu = str(STTModel([[[["conv_block", {"in_chan": 8, "out_chan": 16, "k": 2}]]]], input_size=8))
    assert "8->8, kernel=3, stride=1, dil=1, groups=1, glu: 16->8" in glu
