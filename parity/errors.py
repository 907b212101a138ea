"""What a parity run raises besides bad input (`backends.errors.BadInput`: exit code 2)."""
from __future__ import annotations


class ParityFailure(AssertionError):
    """The backends do not compute the same function: `report.raise_for_failure()` raises it with the
    first divergence in its message; `.report` holds the whole `Report`. An AssertionError, so a test
    that calls `raise_for_failure` (or `parity.testing.assert_parity`) fails rather than errors."""

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report


class WorkerFailed(RuntimeError):
    """A backend's worker process exited with an error (its log tail is in the message)."""


class WorkerTimeout(WorkerFailed):
    """A backend's worker ran past its time limit or stopped making progress, and was killed."""
