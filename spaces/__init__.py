"""The shipped search spaces (package data): found by name, e.g. ``--space small`` or ``--space seed``."""
