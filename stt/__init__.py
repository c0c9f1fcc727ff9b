"""stt: CTC speech recognisers built from the design note's convolutional blocks."""

__version__ = "0.1.0"

from stt.blocks import BLOCKS
from stt.layer_config import LayerConfig, LayerConfigError, load_layer_config
from stt.model import STTModel

__all__ = ["BLOCKS", "LayerConfig", "LayerConfigError", "STTModel", "load_layer_config", "__version__"]
