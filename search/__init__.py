"""search: Optuna architecture search on top of the stt library.

``trials_frame(study_name, storage)`` gives one row per trial as a pandas DataFrame.
"""

from search.compare import trials_frame

__all__ = ["trials_frame"]
