"""Stop signals held off while a checkpoint is written, and deferred across an epoch's bookkeeping."""

import os
import signal

import pytest

from stt.core.signals import stop_signals_deferred, stop_signals_held


@pytest.fixture
def usr1_interrupts():
    previous = signal.signal(signal.SIGUSR1, signal.default_int_handler)
    yield
    signal.signal(signal.SIGUSR1, previous)


def test_a_signal_inside_a_deferred_block_lands_right_after_it(usr1_interrupts):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with stop_signals_deferred():
            os.kill(os.getpid(), signal.SIGUSR1)  # Slurm's warning in the middle of the epoch's bookkeeping
            done.append("metrics")
            done.append("checkpoint")
        done.append("next epoch")  # never: the signal stops the process right after the block
    assert done == ["metrics", "checkpoint"]
    assert signal.getsignal(signal.SIGUSR1) is signal.default_int_handler  # the handler is back


def test_a_signal_inside_a_held_block_is_ignored(usr1_interrupts):
    with stop_signals_held():
        os.kill(os.getpid(), signal.SIGUSR1)  # a second signal while the first one's checkpoint is written
        written = True
    assert written and signal.getsignal(signal.SIGUSR1) is signal.default_int_handler


def test_without_a_signal_the_deferred_block_is_plain(usr1_interrupts):
    with stop_signals_deferred():
        value = 1
    assert value == 1
