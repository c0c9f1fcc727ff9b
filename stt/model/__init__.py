"""The model: the block types (``blocks``), the nested layer config that arranges them (``layer_config``), the
network built from it (``network``) and what it costs (``measure``). Imports nothing from stt but ``stt.core``."""

from stt.model.blocks import BLOCKS
from stt.model.layer_config import LayerConfig, LayerConfigError, load_layer_config
from stt.model.measure import ModelSize, measure
from stt.model.network import STTModel, build_model

__all__ = [
    "BLOCKS",
    "LayerConfig",
    "LayerConfigError",
    "ModelSize",
    "STTModel",
    "build_model",
    "load_layer_config",
    "measure",
]
