"""Parity harness: run the same weights and inputs through several backends and compare everything.

From Python: `parity.compare(target, ...)` returns a `Report` (`raise_for_failure()`, `describe()`);
`parity.testing.assert_parity` is the pytest helper. Names load on first use, so that a worker
(`python -m parity.worker`) or `python -m parity` does not import the harness before it needs it.
"""
from __future__ import annotations

from importlib import import_module

# public name -> the module defining it
_EXPORTS = {"compare": "api", "Report": "harness", "Tolerances": "tolerances", "ParityFailure": "errors",
            "WorkerFailed": "errors", "WorkerTimeout": "errors"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'parity' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
