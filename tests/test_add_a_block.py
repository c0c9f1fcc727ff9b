"""Adding a block type is one config dataclass, one module class and one registry line.

The toy block below is everything a new block needs: with it registered, configs that use it validate
(bad values named by path), a search space samples it with honest parameters, and the model it is in
builds and trains.
"""

from dataclasses import dataclass
from typing import ClassVar

import optuna
import pytest
import torch
import torch.nn.functional as F

from search.space import Space, params_of, sample_config, validate_space
from stt import LayerConfigError, STTModel, load_layer_config
from stt.model.blocks import BLOCKS, Block, BlockConfig, BlockConfigError, ConvGeom, apply_mask, length_mask, param


@dataclass(frozen=True)
class GatedConvConfig(BlockConfig):
    knobs: ClassVar = ("kernel", "dropout")
    width_doc: ClassVar = "in_chan"

    in_chan: int = param(None, "channels C, in and out (derived from the previous block)", required=True)
    kernel: int = param(3, "depthwise kernel width")
    pad: int | None = param(None, "padding, derived for 'same' length", same_pad=("kernel", None))
    dropout: float = param(0.0, "dropout on the gated output", low=0, below=1)

    def out_width(self) -> int:
        return self.in_chan

    def convs(self) -> list[ConvGeom]:
        return [ConvGeom(self.kernel, 1, self.pad, 1)]

    def check(self) -> None:
        if self.kernel > 31:
            raise BlockConfigError("kernel", f"{self.kernel} is wider than 31 frames")

    @classmethod
    def from_knobs(cls, width: int, stride: int, knobs: dict) -> dict:
        return dict(kernel=knobs["kernel"], dropout=knobs["dropout"])

    def to_knobs(self) -> dict:
        return dict(kernel=self.kernel, dropout=self.dropout)


class GatedConv(Block):
    """x * sigmoid(depthwise conv(x)): ``[B, C, T] -> [B, C, T]``."""

    Config = GatedConvConfig

    def __init__(self, cfg: GatedConvConfig):
        super().__init__()
        self.cfg = cfg
        self.gate = torch.nn.Conv1d(cfg.in_chan, cfg.in_chan, cfg.kernel, padding=cfg.pad, groups=cfg.in_chan)
        self.drop = torch.nn.Dropout(cfg.dropout)

    def forward(self, x, lengths):
        y = self.drop(x * torch.sigmoid(self.gate(x)))  # [B, C, T]
        return apply_mask(y, length_mask(lengths, y.size(2))), lengths


@pytest.fixture
def gated_conv(monkeypatch):
    monkeypatch.setitem(BLOCKS, "gated_conv", GatedConv)  # the registry line


def test_a_new_block_validates_with_paths(gated_conv):
    cfg = load_layer_config([[[["gated_conv", {"in_chan": 16, "kernel": 5}]]]])
    assert cfg.layers[0][0][0] == ("gated_conv", {"in_chan": 16, "kernel": 5, "pad": 2, "dropout": 0.0})
    for kw, words in [
        ({"kernel": 4}, "kernel: even kernel 4 cannot keep 'same' length"),
        ({"kernel": 33}, "kernel: 33 is wider than 31 frames"),
        ({"dropout": 1.0}, "dropout: must be in [0, 1), got 1.0"),
        ({"kernal": 3}, "kernal: unknown key for gated_conv; valid: in_chan, kernel, pad, dropout"),
    ]:
        with pytest.raises(
            LayerConfigError,
            match=r"layers\[0\]\.blocks\[0\]\.branches\[0\]\."
            + words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)"),
        ):
            load_layer_config([[[["gated_conv", {"in_chan": 16, **kw}]]]])


def test_a_new_block_is_sampled_by_a_space_with_honest_parameters_builds_and_trains_one_step(gated_conv):
    spec = {
        "width": [16],
        "layers": 2,
        "layer": {"branches": [1, 2]},
        "branch": {"type": ["gated_conv", "conv_block"], "kernel": [3, 5], "dropout": 0.1},
        "train": {"lr": 0.01},
    }
    space = Space(validate_space(spec), "toy", "")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    runs = []
    for _ in range(12):
        trial = study.ask()
        runs.append(sample_config(trial, space))
        assert params_of(runs[-1], space, 4, "toy") == trial.params  # every parameter describes the model
        study.tell(trial, 0.0)
    run = next(r for r in runs if any(t == "gated_conv" for layer in r.layers.layers for t, _ in layer[0]))

    torch.manual_seed(0)
    model = STTModel(run.layers, input_size=8, output_size=6)
    assert "GatedConv(" in str(model)
    gates = [m.gate.weight for m in model.modules() if isinstance(m, GatedConv)]
    before = [g.detach().clone() for g in gates]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, lengths = torch.randn(2, 40, 8), torch.tensor([40, 25])
    y, out_lengths = model(x, lengths)
    loss = F.ctc_loss(
        y.log_softmax(-1).transpose(0, 1), torch.tensor([[1, 2, 3], [4, 5, 1]]), out_lengths, torch.tensor([3, 3])
    )
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and all(not torch.equal(b, g) for b, g in zip(before, gates))
