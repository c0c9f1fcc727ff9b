"""Network morphisms keep the parent's function: the child's outputs equal the parent's at step 0, padding
included, and the child trains on from there."""

import pytest
import torch

from stt.model.layer_config import LayerConfigError, load_layer_config
from stt.model.morph import add_branch, deepen, grow_kernel, widen
from stt.model.network import STTModel

W = 16
CONFIG = [
    [[["conv_block", {"in_chan": W, "out_chan": W, "kernel": 3, "stride": 2}]]],
    [
        [
            ["conv_attention_conv_block", {"out_chan": W, "kernel_conv": 3, "n_heads": 4, "kernel_attn": 3}],
            ["separable_conv_block", {"out_chan": W, "kernel": 3, "dil": 2, "k": 2}],
        ],
        [["feed_forward", {"output_size": W, "d_ff": 24}]],
    ],
    [[["conv_block", {"out_chan": 2 * W, "kernel": 5, "k": 2}]]],
]


def _trained_like(seed: int = 0) -> STTModel:
    """A model whose every weight and BatchNorm statistic is random, as after training (not as initialised)."""
    torch.manual_seed(seed)
    model = STTModel(load_layer_config(CONFIG), input_size=12, output_size=7)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif t.is_floating_point():
                t.normal_(0, 0.5)
    return model.eval()


def _outputs(model: STTModel) -> torch.Tensor:
    torch.manual_seed(1)
    x, lengths = torch.randn(3, 40, 12), torch.tensor([40, 31, 17])  # two padded utterances
    with torch.no_grad():
        y, n = model(x, lengths)
    assert n.tolist() == [20, 16, 9]
    return y * (torch.arange(y.size(1))[None, :, None] < n[:, None, None])  # real frames only


@pytest.mark.parametrize(
    "morph",
    [
        lambda cfg, m: deepen(cfg, m, after=0),
        lambda cfg, m: deepen(cfg, m, after=1, kernel=5),
        lambda cfg, m: widen(cfg, m, layer=1),
        lambda cfg, m: grow_kernel(cfg, m, 0, 0, 0, kernel=7),  # a strided conv_block
        lambda cfg, m: grow_kernel(cfg, m, 1, 0, 0, kernel=5),  # the conv of a conv-attention-conv
        lambda cfg, m: grow_kernel(cfg, m, 1, 0, 1, kernel=7),  # a dilated depthwise conv
        lambda cfg, m: add_branch(cfg, m, 1, ["conv_block", {"out_chan": 8, "kernel": 5}]),
    ],
    ids=["deepen-stem", "deepen-middle", "widen", "kernel-strided", "kernel-cac", "kernel-dilated", "branch"],
)
def test_every_morphism_keeps_the_parents_outputs_at_step_0(morph):
    parent = _trained_like()
    cfg, child = morph(parent.config, parent)
    assert cfg != parent.config and sum(p.numel() for p in child.parameters()) > sum(
        p.numel() for p in parent.parameters()
    )
    assert torch.allclose(_outputs(child.eval()), _outputs(parent), atol=1e-5)
    # a real child, not the parent: a step of training moves it off the parent's function
    child.train()
    opt = torch.optim.SGD(child.parameters(), lr=0.1)
    y, _ = child(torch.randn(2, 40, 12))
    y.square().mean().backward()
    opt.step()
    assert not torch.allclose(_outputs(child.eval()), _outputs(parent), atol=1e-5)


def test_a_morphism_that_cannot_apply_says_why():
    parent = _trained_like()
    with pytest.raises(LayerConfigError, match=r"widen: layers\[0\] does not end in a feed-forward merge"):
        widen(parent.config, parent, 0)
    with pytest.raises(LayerConfigError, match=r"kernel 4 must exceed 3 by an even number"):
        grow_kernel(parent.config, parent, 0, 0, 0, kernel=4)
    with pytest.raises(LayerConfigError, match=r"add_branch: layers\[2\] is not parallel branches merged"):
        add_branch(parent.config, parent, 2, ["conv_block", {"out_chan": 8}])
    plain = STTModel(load_layer_config(CONFIG), input_size=12, output_size=7, residual=False)
    with pytest.raises(LayerConfigError, match=r"deepen: the model has no residuals"):
        deepen(plain.config, plain, 0)


def test_morphisms_chain_travel_as_plain_data_and_the_config_alone_is_known_before_any_weights():
    from stt.model.morph import from_dict, grow, grown

    morphs = [
        {"op": "grow_kernel", "layer": 1, "block": 0, "branch": 1, "kernel": 5},
        {"op": "deepen", "after": 2, "kernel": 5},
        {"op": "widen", "layer": 1, "factor": 3},
        {"op": "add_branch", "layer": 1, "branch": ["conv_block", {"out_chan": 8}]},
    ]
    ops = [from_dict(d) for d in morphs]
    assert [from_dict(o.to_dict()) for o in ops] == ops and ops[2].to_dict() == {**morphs[2], "seed": 0}
    parent = _trained_like()
    cfg, child = grow(parent.config, parent, ops)
    assert cfg == grown(parent.config, ops) == child.config and len(cfg.layers) == 4
    assert torch.allclose(_outputs(child.eval()), _outputs(parent), atol=1e-5)
    with pytest.raises(LayerConfigError, match=r"morph: op 'shrink': valid: deepen, widen, grow_kernel, add_branch"):
        from_dict({"op": "shrink"})
