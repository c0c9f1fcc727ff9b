"""Training and scoring one run config: the run config file (``run_config``), whether CTC can align it on a corpus
(``feasibility``), the trainer (``trainer``), scoring a split (``evaluation``, ``metrics``) and a trained run
directory loaded back (``run``). Imports ``stt.core``, ``stt.data``, ``stt.model`` and ``stt.decode``."""
