"""Network morphisms: a bigger model that computes exactly what a trained one computes, to train on from there.

Each function takes a layer config and a model built from it, and returns the grown config and a model built from
that, with the parent's weights carried over and the new weights set so that, in eval mode, the child's outputs
equal the parent's at step 0 (padding included). A child then needs a few epochs, not a whole training. (Wei et
al. 2016, "Network Morphism"; Chen et al. 2016, "Net2Net"; Elsken et al. 2019, LEMONADE.)

* :func:`deepen`: a new layer, a convolution whose BatchNorm scale and shift start at zero, so its residual
  passes its input through unchanged;
* :func:`widen`: a merge feed-forward's hidden width doubled by Net2Net (units copied, their outgoing weights
  halved);
* :func:`grow_kernel`: a convolution's kernel widened with zero taps (the "same" padding grows with it);
* :func:`add_branch`: a parallel branch beside a block whose outputs a feed-forward merges, the merge's weights
  on the new branch at zero.

Dropout and BatchNorm's batch statistics make training-mode outputs differ from the first step; every test
compares in eval mode, as evaluation and the first checkpoint see the model.
"""

from __future__ import annotations

import copy
import re

import torch

from stt.model.layer_config import LayerConfig, LayerConfigError, load_layer_config
from stt.model.network import STTModel

_CONV = {"conv_block": ("kernel", "dil", "pad", "conv"), "separable_conv_block": ("kernel", "dil", "pad", "depthwise")}
_CONV["conv_attention_conv_block"] = ("kernel_conv", "dil_conv", "pad_conv", "conv.conv")


def _child(parent: STTModel, layers: list) -> tuple[LayerConfig, STTModel]:
    """The grown config, validated, and an untrained model of it beside the parent (same device, same sizes)."""
    cfg = load_layer_config(layers, in_width=None if parent.input_proj is not None else parent.input_size)
    p = next(parent.parameters())
    input_proj = "base" if parent.input_proj is not None else None
    child = STTModel(cfg, parent.input_size, input_proj, parent.output_size, parent.residual).to(p.device)
    return cfg, child.train(parent.training)


def _carry(parent: STTModel, child: STTModel, rename=lambda k: k) -> dict:
    """The child's state with every parent tensor copied in (under ``rename``); returns it for further edits."""
    state = child.state_dict()
    for key, value in parent.state_dict().items():
        new = rename(key)
        if new is None:
            continue
        if state[new].shape != value.shape:
            raise LayerConfigError(
                f"morph: {key} -> {new} changes shape {tuple(value.shape)} -> {tuple(state[new].shape)}"
            )
        state[new] = value.clone()
    return state


def deepen(cfg: LayerConfig, model: STTModel, after: int, kernel: int = 3) -> tuple[LayerConfig, STTModel]:
    """A new layer after layer ``after``: one ``conv_block`` of the model's width there, starting as the identity.

    The new layer keeps its input's shape, so the model adds its residual around it (``residual: true``); its
    BatchNorm's scale and shift start at zero, so the conv's output is zero and the residual passes the input on.
    """
    if not model.residual:
        raise LayerConfigError("morph deepen: the model has no residuals (model.residual: false)")
    if not 0 <= after < len(cfg.layers):
        raise LayerConfigError(f"morph deepen: after {after}: the model has layers 0..{len(cfg.layers) - 1}")
    width = cfg.layer_in_out(after)[1]
    layers = cfg.to_list()
    layers.insert(after + 1, [[["conv_block", {"in_chan": width, "out_chan": width, "kernel": kernel}]]])
    new_cfg, child = _child(model, layers)

    def rename(key: str) -> str:
        m = re.match(r"layers\.(\d+)\.(.*)", key)
        if m and int(m[1]) > after:
            return f"layers.{int(m[1]) + 1}.{m[2]}"
        return key

    state = _carry(model, child, rename)
    norm = f"layers.{after + 1}.blocks.0.branches.0.norm"
    state[f"{norm}.weight"].zero_()
    state[f"{norm}.bias"].zero_()
    child.load_state_dict(state)
    return new_cfg, child


def widen(
    cfg: LayerConfig, model: STTModel, layer: int, factor: int = 2, seed: int = 0
) -> tuple[LayerConfig, STTModel]:
    """Layer ``layer``'s merge feed-forward with ``factor`` times its hidden width, by Net2Net.

    Each new hidden unit copies a randomly chosen old one (its incoming weights and bias); the outgoing weights of
    every copied unit are divided by its number of copies, so each output sums to what it was.
    """
    blocks = cfg.layers[layer] if 0 <= layer < len(cfg.layers) else []
    if not blocks or blocks[-1][0][0] != "feed_forward" or len(blocks[-1]) != 1:
        raise LayerConfigError(f"morph widen: layers[{layer}] does not end in a feed-forward merge")
    j = len(blocks) - 1
    old = blocks[j][0][1]["d_ff"]
    layers = cfg.to_list()
    layers[layer][j][0][1]["d_ff"] = old * factor
    new_cfg, child = _child(model, layers)
    ff = f"layers.{layer}.blocks.{j}.branches.0.ff"
    grown = {f"{ff}.0.weight", f"{ff}.0.bias", f"{ff}.3.weight"}
    state = _carry(model, child, lambda k: None if k in grown else k)
    w1, b1, w2 = (model.state_dict()[f"{ff}.{k}"] for k in ("0.weight", "0.bias", "3.weight"))
    g = torch.Generator().manual_seed(seed)
    pick = torch.cat([torch.arange(old), torch.randint(old, ((factor - 1) * old,), generator=g)]).to(w1.device)
    copies = torch.bincount(pick, minlength=old).to(w2.dtype)  # [old]: how many units now compute each old one
    state[f"{ff}.0.weight"], state[f"{ff}.0.bias"] = w1[pick].clone(), b1[pick].clone()
    state[f"{ff}.3.weight"] = (w2 / copies)[:, pick].clone()
    child.load_state_dict(state)
    return new_cfg, child


def grow_kernel(cfg: LayerConfig, model: STTModel, layer: int, block: int, branch: int, kernel: int):
    """A convolution's kernel widened to ``kernel`` (odd, larger) with zero taps on both sides.

    Applies to ``conv_block`` and ``separable_conv_block`` kernels and to the conv of a
    ``conv_attention_conv_block``. The "same" padding grows with the kernel, so every output frame still
    lines up with the same input frame, and the zero taps add nothing.
    """
    try:
        btype, kw = cfg.layers[layer][block][branch]
    except IndexError:
        where = f"layers[{layer}].blocks[{block}].branches[{branch}]"
        raise LayerConfigError(f"morph grow_kernel: no branch {where}") from None
    if btype not in _CONV:
        raise LayerConfigError(f"morph grow_kernel: {btype} has no convolution kernel to grow ({', '.join(_CONV)})")
    k_key, _, pad_key, module = _CONV[btype]
    old = kw[k_key]
    if kernel <= old or (kernel - old) % 2:
        raise LayerConfigError(f"morph grow_kernel: kernel {kernel} must exceed {old} by an even number of taps")
    layers = cfg.to_list()
    new_kw = layers[layer][block][branch][1]
    new_kw[k_key] = kernel
    del new_kw[pad_key]  # derived again for the new kernel
    new_cfg, child = _child(model, layers)
    conv = f"layers.{layer}.blocks.{block}.branches.{branch}.{module}.weight"
    state = _carry(model, child, lambda k: None if k == conv else k)
    w = model.state_dict()[conv]  # [C_out, C_in / groups, old]
    side = (kernel - old) // 2
    state[conv] = torch.nn.functional.pad(w, (side, side))  # zero taps either side: the centre keeps its place
    child.load_state_dict(state)
    return new_cfg, child


def add_branch(cfg: LayerConfig, model: STTModel, layer: int, branch: list) -> tuple[LayerConfig, STTModel]:
    """A parallel branch ``[block_type, {kwargs}]`` added to layer ``layer``'s first block, which a feed-forward
    merges: the merge's first weights on the new branch's channels start at zero, so its output is unchanged.

    The new branch is appended last (its channels come last in the concatenation); its own weights start
    random, as a new model's do.
    """
    blocks = cfg.layers[layer] if 0 <= layer < len(cfg.layers) else []
    if len(blocks) != 2 or blocks[1][0][0] != "feed_forward":
        raise LayerConfigError(f"morph add_branch: layers[{layer}] is not parallel branches merged by a feed-forward")
    layers = cfg.to_list()
    new = copy.deepcopy(branch)
    layers[layer][0].append(new)
    del layers[layer][1][0][1]["input_size"]  # derived again: the sum of the branches' widths
    new_cfg, child = _child(model, layers)
    first = f"layers.{layer}.blocks.1.branches.0.ff.0.weight"
    state = _carry(model, child, lambda k: None if k == first else k)
    w = model.state_dict()[first]  # [d_ff, old width]
    zeros = torch.zeros(w.size(0), state[first].size(1) - w.size(1), dtype=w.dtype, device=w.device)
    state[first] = torch.cat([w, zeros], 1)  # [d_ff, new width]: nothing of the new branch reaches the merge yet
    child.load_state_dict(state)
    return new_cfg, child
