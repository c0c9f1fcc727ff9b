"""The nested layer config: loading, derivation, and errors that name the path."""

import pytest
import yaml

from stt import LayerConfigError, load_layer_config
from stt.model.layer_config import shipped_configs


def conv(**kw):
    return ["conv_block", kw]


def test_seed_base_is_the_design_notes_config():
    cfg = load_layer_config("seed_base.yaml")
    assert len(cfg.layers) == 6 and cfg.in_width == 512 and cfg.out_width == 512
    assert [cfg.layer_stride(i) for i in range(6)] == [1, 2, 1, 2, 1, 1]
    first = cfg.layers[0][0]
    assert [kw["dil_conv"] for _, kw in first] == [1, 2, 3]
    assert [kw["pad_conv"] for _, kw in first] == [1, 2, 3]
    assert cfg.layers[0][1][0] == (
        "feed_forward",
        {"input_size": 1536, "output_size": 512, "d_ff": 2048, "dropout": 0.25},
    )
    assert "seed_base.yaml" in shipped_configs()


def test_derives_widths_pads_and_feed_forward_input():
    cfg = load_layer_config(
        [
            [
                [conv(in_chan=16, out_chan=32, kernel=5), conv(out_chan=32, kernel=3, dil=3, k=2)],
                [["feed_forward", {"output_size": 16}]],
            ]
        ]
    )
    (_, a), (_, b) = cfg.layers[0][0]
    assert a["pad"] == 2 and b["pad"] == 3 and b["in_chan"] == 16
    assert cfg.layers[0][1][0][1]["input_size"] == 32 + 16  # GLU halves the second branch
    assert cfg.out_width == 16


@pytest.mark.parametrize("src_kind", ["path", "yaml", "list"])
def test_yaml_round_trip(tmp_path, src_kind):
    cfg = load_layer_config("seed_base.yaml")
    text = cfg.to_yaml()
    src = {"yaml": text, "list": yaml.safe_load(text)}.get(src_kind)
    if src_kind == "path":
        src = tmp_path / "c.yaml"
        src.write_text(text)
    again = load_layer_config(src)
    assert again == cfg and again.hash() == cfg.hash()


def test_hash_ignores_what_normalisation_fills_in():
    a = load_layer_config([[[conv(in_chan=8, out_chan=8, kernel=3)]]])
    b = load_layer_config([[[conv(in_chan=8, out_chan=8, kernel=3, pad=1, stride=1, k=1)]]])
    c = load_layer_config([[[conv(in_chan=8, out_chan=8, kernel=5)]]])
    assert a.hash() == b.hash() != c.hash()


W = dict(in_chan=64, out_chan=64)
INVALID = [
    # (config, expected path, expected words in the message)
    ([[[["conv_blok", W]]]], "layers[0].blocks[0].branches[0]", "unknown block type 'conv_blok'"),
    ([[[conv(**W, kernal=3)]]], "layers[0].blocks[0].branches[0].kernal", "unknown key for conv_block; valid:"),
    ([[[["attention_conv_block", {"in_chan": 64, "n_heads": 6}]]]], "branches[0].n_heads", "6 does not divide 64"),
    ([[[["conv_attention_conv_block", dict(W, n_heads=5)]]]], "branches[0].n_heads", "5 does not divide 64"),
    ([[[conv(**W), conv(out_chan=64, stride=2)]]], "layers[0].blocks[0].branches[1]", "stride 2 differs"),
    ([[[conv(**W, kernel=4)]]], "branches[0].kernel", "cannot keep 'same' length"),
    ([[[conv(**W, kernel=3, dil=2, pad=1)]]], "branches[0].pad", "'same' padding"),
    ([[[conv(in_chan=64, out_chan=0)]]], "branches[0].out_chan", "must be a positive integer"),
    ([[[conv(**W, stride=-1)]]], "branches[0].stride", "must be a positive integer"),
    ([[[conv(in_chan=64, out_chan=63, k=2)]]], "branches[0].out_chan", "GLU"),
    ([[[conv(**W, k=3)]]], "branches[0].k", "must be one of 1, 2 (1: ReLU, 2: GLU"),
    ([[[conv(**W, groups=5)]]], "branches[0].groups", "does not divide in_chan 64"),
    ([[[conv(**W, dropout=1.5)]]], "branches[0].dropout", "in [0, 1)"),
    ([[[conv(**W, kernel="3")]]], "branches[0].kernel", "expected an integer"),
    (
        [[[conv(**W)]], [[conv(in_chan=32, out_chan=64)]]],
        "layers[1].blocks[0].branches[0].in_chan",
        "32, but the input",
    ),
    ([[[["feed_forward", {"input_size": 64}]]]], "branches[0].output_size", "missing"),
    ([[[conv(out_chan=64)]]], "branches[0].in_chan", "needed on the first branch"),
    ([[[["conv_block"]]]], "layers[0].blocks[0].branches[0]", "expected [block_type, {kwargs}]"),
    ([[]], "layers[0]", "non-empty list of blocks"),
    ([], "layers", "non-empty list of layers"),
    ([[[["attention_conv_block", {"in_chan": 64, "kernel": 4}]]]], "branches[0].kernel", "even kernel 4"),
    ([[[conv(**W, bias=True)]]], "branches[0].bias", "unknown key"),
]


@pytest.mark.parametrize("config,path,words", INVALID, ids=[w for _, _, w in INVALID])
def test_invalid_configs_fail_at_load_naming_path_and_problem(config, path, words):
    with pytest.raises(LayerConfigError) as e:
        load_layer_config(config)
    assert path in str(e.value) and words in str(e.value), str(e.value)


def test_error_from_a_file_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("- - - [conv_block, {in_chan: 8, out_chan: 8, kernel: 4}]\n")
    with pytest.raises(LayerConfigError, match=r"bad\.yaml: layers\[0\]\.blocks\[0\]\.branches\[0\]\.kernel"):
        load_layer_config(p)
    with pytest.raises(LayerConfigError, match="no such file"):
        load_layer_config(tmp_path / "missing.yaml")
    p.write_text("- [a, {b: }\n")
    with pytest.raises(LayerConfigError, match="not valid YAML"):
        load_layer_config(p)
