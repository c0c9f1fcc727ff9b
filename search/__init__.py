"""search: Optuna architecture search on top of the stt library.

Modules, in the order they build on each other: ``trials`` (the vocabulary of trial records) and ``storage``;
``space``, ``samplers`` and ``pruners``; ``settings`` (every search option, declared once); ``isolation``
(a trial in a child process) and ``workers``; ``objective`` (one trial's life), ``stopping`` and ``rescore``;
``study`` (create and run); ``results`` (compare, export); ``cli``.

``trials_frame(study_name, storage)`` gives one row per trial as a pandas DataFrame.
"""

from search.results.compare import trials_frame

__all__ = ["trials_frame"]
