"""CTC decoding: greedy (``greedy``), and beam search with a lexicon and an n-gram LM (``beam``, ``lm``).
Imports ``stt.core`` and ``stt.data`` (letters, transcripts), never the model or training."""
