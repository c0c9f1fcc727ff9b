"""search: Optuna architecture search on top of the stt library."""
