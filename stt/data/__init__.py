"""Audio corpora to batches: reading audio (``audio``), corpus layouts (``corpus``), the built-in espeak-ng corpus
(``synth``), the letter tokenizer (``text``), frontends and their feature cache (``frontends``, ``features``),
a data folder's train/dev/test opened once (``training_data``), frame-budget batches (``batching``) and
SpecAugment (``augment``). Imports nothing from stt but ``stt.core``."""
