"""A pytest helper: `assert_parity(target, **options)` fails the test with the first divergence.

    from parity.testing import assert_parity

    def test_my_checkpoint_is_the_same_function_in_paddle():
        assert_parity("path/to/checkpoint", backends=("torch", "paddle"), dtype="float64", seq_len=16)

Options are those of `parity.compare`. Bad input (an unknown preset, a sequence longer than the
model's positions, ...) raises `backends.errors.BadInput`, a worker that crashes or hangs past its
timeout raises `parity.errors.WorkerFailed`: both show as test errors, a divergence as a failure.
"""
from __future__ import annotations

from .api import compare
from .harness import Report


def assert_parity(target, **options) -> Report:
    """Run `parity.compare(target, **options)`; raise `ParityFailure` (an AssertionError) unless every
    backend computes the same function as the reference. Returns the Report."""
    __tracebackhide__ = True  # pytest: the failure is reported at the caller's line
    return compare(target, **options).raise_for_failure()
