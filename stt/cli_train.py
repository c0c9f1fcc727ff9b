"""``stt train``, ``stt eval``, ``stt transcribe``."""


def add_commands(sub) -> None:
    pass
