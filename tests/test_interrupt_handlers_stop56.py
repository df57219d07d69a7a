"""A signal held while a report moves goes to the caller's own handler (stop 56 review)."""

import os
import signal

import pytest

from tying.experiments.output import _interrupt_deferred


@pytest.fixture
def sigint_restored():
    before = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, before)


def test_held_ctrl_c_reaches_the_callers_handler(sigint_restored):
    calls = []
    signal.signal(signal.SIGINT, lambda n, f: calls.append(n))
    try:
        with _interrupt_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            assert calls == []  # held while the block runs
    except KeyboardInterrupt:  # before: raised over the caller's handler
        pytest.fail("KeyboardInterrupt raised; the caller's SIGINT handler was not called")
    assert calls == [signal.SIGINT]  # then given to the handler


def test_held_ctrl_c_still_raises_with_pythons_default(sigint_restored):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt), _interrupt_deferred():
        os.kill(os.getpid(), signal.SIGINT)
