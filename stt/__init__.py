"""stt: CTC speech recognisers built from the design note's convolutional blocks."""

__version__ = "0.1.0"

from stt.blocks import BLOCKS  # noqa: E402
from stt.layer_config import LayerConfig, LayerConfigError, load_layer_config  # noqa: E402
from stt.model import STTModel  # noqa: E402

__all__ = ["BLOCKS", "LayerConfig", "LayerConfigError", "STTModel", "load_layer_config", "__version__"]
