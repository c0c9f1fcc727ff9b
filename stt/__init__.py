"""stt: CTC speech recognisers built from the design note's convolutional blocks.

Packages, each importing only those before it: ``core`` (errors, files, devices, checkpoints), ``data`` (audio,
corpora, letters, features, batches) and ``model`` (blocks, layer configs, the network), ``decode`` (greedy and
beam search), ``train`` (run configs, the trainer, evaluation, trained runs), and ``cli`` (the ``stt`` command).
"""

__version__ = "0.1.0"

from stt.model import BLOCKS, LayerConfig, LayerConfigError, STTModel, load_layer_config

__all__ = ["BLOCKS", "LayerConfig", "LayerConfigError", "STTModel", "load_layer_config", "__version__"]
