"""``stt prepare``: corpora and feature caches."""


def add_commands(sub) -> None:
    pass
