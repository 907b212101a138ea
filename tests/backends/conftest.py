"""Fixtures of the backends tests."""
from __future__ import annotations

import signal

import pytest


@pytest.fixture
def deadline():
    """The fuzz may not hang: an alarm fails it after a minute."""
    def expire(signum, frame):
        raise TimeoutError("the reader hangs")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
