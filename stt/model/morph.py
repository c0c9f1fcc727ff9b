"""Network morphisms: a bigger model that computes exactly what a trained one computes, to train on from there.

A morphism is a small frozen dataclass with two halves: :meth:`Morph.layers` grows a layer config (so a search
can record and check a child's config before any weights exist), and :meth:`Morph.weights` carries a parent's
weights into the child's, setting the new ones so that, in eval mode, the child's outputs equal the parent's at
step 0 (padding included). A child then needs a few epochs, not a whole training. (Wei et al. 2016, "Network
Morphism"; Chen et al. 2016, "Net2Net"; Elsken et al. 2019, LEMONADE.)

* :class:`Deepen`: a new layer, a convolution whose BatchNorm scale and shift start at zero, so its residual
  passes its input through unchanged;
* :class:`Widen`: a merge feed-forward's hidden width multiplied by Net2Net (units copied, their outgoing
  weights divided among the copies);
* :class:`GrowKernel`: a convolution's kernel widened with zero taps (the "same" padding grows with it);
* :class:`AddBranch`: a parallel branch beside a block whose outputs a feed-forward merges, the merge's
  weights on the new branch at zero.

:func:`grown` applies morphisms to a config, :func:`grow` to a config and its model. A morphism is stored as
plain data, ``{"op": "deepen", "after": 2}`` (:func:`from_dict`, :meth:`Morph.to_dict`). Dropout and BatchNorm's
batch statistics make training-mode outputs differ from the first step; the tests compare in eval mode, as
evaluation and the first checkpoint see the model.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import ClassVar

import torch

from stt.model.layer_config import LayerConfig, LayerConfigError, load_layer_config
from stt.model.network import STTModel

# the block types whose convolution kernel can grow: (kernel key, padding key, the conv's module path)
_CONV = {
    "conv_block": ("kernel", "pad", "conv"),
    "separable_conv_block": ("kernel", "pad", "depthwise"),
    "conv_attention_conv_block": ("kernel_conv", "pad_conv", "conv.conv"),
}


@dataclass(frozen=True)
class Morph:
    """A function-preserving change of a layer config and of the weights of a model built from it."""

    op: ClassVar[str]  # its name in plain data

    def layers(self, cfg: LayerConfig) -> list:
        """The child's nested layer config (plain lists), or a LayerConfigError saying why it cannot apply."""
        raise NotImplementedError

    def rename(self, key: str) -> str | None:
        """Where a parent's state-dict entry goes in the child's (None: :meth:`weights` sets it itself)."""
        return key

    def weights(self, parent: dict, child: dict) -> None:
        """Set, in the child's state (already holding the carried parent entries), what the morphism changes."""

    def to_dict(self) -> dict:
        return {"op": self.op, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Deepen(Morph):
    """A new layer after layer ``after``: one ``conv_block`` of the model's width there, starting as the identity.

    The new layer keeps its input's shape, so the model adds its residual around it (``residual: true``); its
    BatchNorm's scale and shift start at zero, so the conv adds nothing and the residual passes the input on.
    """

    op: ClassVar[str] = "deepen"
    after: int
    kernel: int = 3

    def layers(self, cfg: LayerConfig) -> list:
        if not 0 <= self.after < len(cfg.layers):
            raise LayerConfigError(f"morph deepen: after {self.after}: the model has layers 0..{len(cfg.layers) - 1}")
        width = cfg.layer_in_out(self.after)[1]
        layers = cfg.to_list()
        layers.insert(self.after + 1, [[["conv_block", {"in_chan": width, "out_chan": width, "kernel": self.kernel}]]])
        return layers

    def rename(self, key: str) -> str:
        m = re.match(r"layers\.(\d+)\.(.*)", key)
        return f"layers.{int(m[1]) + 1}.{m[2]}" if m and int(m[1]) > self.after else key

    def weights(self, parent: dict, child: dict) -> None:
        norm = f"layers.{self.after + 1}.blocks.0.branches.0.norm"
        child[f"{norm}.weight"].zero_()
        child[f"{norm}.bias"].zero_()


@dataclass(frozen=True)
class Widen(Morph):
    """Layer ``layer``'s merge feed-forward with ``factor`` times its hidden width, by Net2Net.

    Each new hidden unit copies a randomly chosen old one (its incoming weights and bias); the outgoing weights of
    every copied unit are divided by its number of copies, so each output sums to what it was.
    """

    op: ClassVar[str] = "widen"
    layer: int
    factor: int = 2
    seed: int = 0

    def layers(self, cfg: LayerConfig) -> list:
        blocks = cfg.layers[self.layer] if 0 <= self.layer < len(cfg.layers) else []
        if not blocks or blocks[-1][0][0] != "feed_forward" or len(blocks[-1]) != 1:
            raise LayerConfigError(f"morph widen: layers[{self.layer}] does not end in a feed-forward merge")
        if self.factor < 2:
            raise LayerConfigError(f"morph widen: factor {self.factor}: expected 2 or more")
        layers = cfg.to_list()
        layers[self.layer][-1][0][1]["d_ff"] *= self.factor
        return layers

    def _grown(self, key: str) -> re.Match | None:
        """The merge feed-forward's entries whose shape grows: its first linear, and the second's weight."""
        return re.fullmatch(
            rf"(layers\.{self.layer}\.blocks\.\d+\.branches\.0\.ff)\.(0\.weight|0\.bias|3\.weight)", key
        )

    def rename(self, key: str) -> str | None:
        return None if self._grown(key) else key

    def weights(self, parent: dict, child: dict) -> None:
        ff = next(m[1] for m in map(self._grown, parent) if m)
        w1, b1, w2 = parent[f"{ff}.0.weight"], parent[f"{ff}.0.bias"], parent[f"{ff}.3.weight"]
        old = w1.size(0)
        g = torch.Generator().manual_seed(self.seed)
        pick = torch.cat([torch.arange(old), torch.randint(old, ((self.factor - 1) * old,), generator=g)])
        copies = torch.bincount(pick, minlength=old).to(w2.dtype).to(w2.device)  # units now computing each old one
        pick = pick.to(w1.device)
        child[f"{ff}.0.weight"], child[f"{ff}.0.bias"] = w1[pick].clone(), b1[pick].clone()
        child[f"{ff}.3.weight"] = (w2 / copies)[:, pick].clone()


@dataclass(frozen=True)
class GrowKernel(Morph):
    """The convolution of branch ``layers[layer].blocks[block].branches[branch]`` widened to ``kernel`` taps.

    Applies to ``conv_block`` and ``separable_conv_block`` kernels and to the conv of a
    ``conv_attention_conv_block``. The "same" padding grows with the kernel, so every output frame still lines
    up with the same input frame, and the zero taps add nothing.
    """

    op: ClassVar[str] = "grow_kernel"
    layer: int
    block: int
    branch: int
    kernel: int

    @property
    def _where(self) -> str:
        return f"layers.{self.layer}.blocks.{self.block}.branches.{self.branch}"

    def layers(self, cfg: LayerConfig) -> list:
        try:
            btype, kw = cfg.layers[self.layer][self.block][self.branch]
        except IndexError:
            where = f"layers[{self.layer}].blocks[{self.block}].branches[{self.branch}]"
            raise LayerConfigError(f"morph grow_kernel: no branch {where}") from None
        if btype not in _CONV:
            raise LayerConfigError(f"morph grow_kernel: {btype} has no convolution kernel to grow ({', '.join(_CONV)})")
        k_key, pad_key, _ = _CONV[btype]
        if self.kernel <= kw[k_key] or (self.kernel - kw[k_key]) % 2:
            raise LayerConfigError(
                f"morph grow_kernel: kernel {self.kernel} must exceed {kw[k_key]} by an even number of taps"
            )
        layers = cfg.to_list()
        new_kw = layers[self.layer][self.block][self.branch][1]
        new_kw[k_key] = self.kernel
        del new_kw[pad_key]  # derived again for the new kernel
        return layers

    def rename(self, key: str) -> str | None:
        convs = {f"{self._where}.{module}.weight" for _, _, module in _CONV.values()}
        return None if key in convs else key

    def weights(self, parent: dict, child: dict) -> None:
        for _, _, module in _CONV.values():
            key = f"{self._where}.{module}.weight"
            if key in parent and key in child:
                w = parent[key]  # [C_out, C_in / groups, old]
                side = (child[key].size(-1) - w.size(-1)) // 2
                child[key] = torch.nn.functional.pad(w, (side, side))  # zero taps either side: the centre stays


@dataclass(frozen=True)
class AddBranch(Morph):
    """A parallel branch ``[block_type, {kwargs}]`` added to layer ``layer``'s first block, which a feed-forward
    merges: the merge's first weights on the new branch's channels start at zero, so its output is unchanged.

    The new branch is appended last (its channels come last in the concatenation); its own weights start
    random, as a new model's do.
    """

    op: ClassVar[str] = "add_branch"
    layer: int
    branch: tuple  # (block_type, {kwargs}), the input width derived

    def layers(self, cfg: LayerConfig) -> list:
        blocks = cfg.layers[self.layer] if 0 <= self.layer < len(cfg.layers) else []
        if len(blocks) != 2 or blocks[1][0][0] != "feed_forward":
            raise LayerConfigError(
                f"morph add_branch: layers[{self.layer}] is not parallel branches merged by a feed-forward"
            )
        layers = cfg.to_list()
        layers[self.layer][0].append([self.branch[0], copy.deepcopy(dict(self.branch[1]))])
        del layers[self.layer][1][0][1]["input_size"]  # derived again: the sum of the branches' widths
        return layers

    @property
    def _merge(self) -> str:
        return f"layers.{self.layer}.blocks.1.branches.0.ff.0.weight"

    def rename(self, key: str) -> str | None:
        return None if key == self._merge else key

    def weights(self, parent: dict, child: dict) -> None:
        w = parent[self._merge]  # [d_ff, old width]
        zeros = torch.zeros(w.size(0), child[self._merge].size(1) - w.size(1), dtype=w.dtype, device=w.device)
        child[self._merge] = torch.cat([w, zeros], 1)  # [d_ff, new width]: nothing of the new branch reaches it yet


MORPHS: dict[str, type[Morph]] = {m.op: m for m in (Deepen, Widen, GrowKernel, AddBranch)}


def from_dict(d: dict) -> Morph:
    """A morphism from plain data: ``{"op": "grow_kernel", "layer": 1, "block": 0, "branch": 0, "kernel": 7}``."""
    d = dict(d)
    op = d.pop("op", None)
    if op not in MORPHS:
        raise LayerConfigError(f"morph: op {op!r}: valid: {', '.join(MORPHS)}")
    if op == "add_branch" and "branch" in d:
        d["branch"] = tuple(d["branch"])
    try:
        return MORPHS[op](**d)
    except TypeError as e:
        raise LayerConfigError(f"morph {op}: {e}") from None


def grown(cfg: LayerConfig, morphs, in_width: int | None = None) -> LayerConfig:
    """The layer config after ``morphs`` (applied in order); no weights needed."""
    for m in morphs:
        cfg = load_layer_config(m.layers(cfg), in_width=in_width)
    return cfg


def grow(cfg: LayerConfig, model: STTModel, morphs) -> tuple[LayerConfig, STTModel]:
    """The grown config and a model of it carrying ``model``'s weights, with the same outputs at step 0."""
    for m in morphs:
        if isinstance(m, Deepen) and not model.residual:
            raise LayerConfigError("morph deepen: the model has no residuals (model.residual: false)")
        in_width = None if model.input_proj is not None else model.input_size
        cfg = load_layer_config(m.layers(cfg), in_width=in_width)
        device = next(model.parameters()).device
        proj = "base" if model.input_proj is not None else None
        child = STTModel(cfg, model.input_size, proj, model.output_size, model.residual).to(device)
        parent_state, state = model.state_dict(), child.state_dict()
        for key, value in parent_state.items():
            new = m.rename(key)
            if new is None:
                continue
            if state[new].shape != value.shape:
                shapes = f"{tuple(value.shape)} -> {tuple(state[new].shape)}"
                raise LayerConfigError(f"morph {m.op}: {key} -> {new} changes shape {shapes}")
            state[new] = value.clone()
        m.weights(parent_state, state)
        child.load_state_dict(state)
        model = child.train(model.training)
    return cfg, model


def deepen(cfg: LayerConfig, model: STTModel, after: int, kernel: int = 3) -> tuple[LayerConfig, STTModel]:
    return grow(cfg, model, [Deepen(after, kernel)])


def widen(cfg: LayerConfig, model: STTModel, layer: int, factor: int = 2, seed: int = 0):
    return grow(cfg, model, [Widen(layer, factor, seed)])


def grow_kernel(cfg: LayerConfig, model: STTModel, layer: int, block: int, branch: int, kernel: int):
    return grow(cfg, model, [GrowKernel(layer, block, branch, kernel)])


def add_branch(cfg: LayerConfig, model: STTModel, layer: int, branch: list) -> tuple[LayerConfig, STTModel]:
    return grow(cfg, model, [AddBranch(layer, (branch[0], branch[1]))])
