"""Shared fixtures: installed backends, backend pairs, and where the real data lives."""
from __future__ import annotations

import os
from itertools import combinations
from pathlib import Path

import pytest

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from backends import import_framework, installed_frameworks  # noqa: E402

BACKENDS = installed_frameworks()
# Tests that use two frameworks in this process must find them imported in the registry's order
# (backends/_fw/__init__.py): importing paddle after tensorflow segfaults, the other order works.
for _fw in BACKENDS:
    import_framework(_fw)
BACKEND_PAIRS = list(combinations(BACKENDS, 2))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each installed framework."""
    return request.param


@pytest.fixture(params=BACKEND_PAIRS, ids=lambda pair: "-".join(pair))
def backend_pair(request):
    """Each pair of installed frameworks (reference, candidate)."""
    return request.param


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (or $NLP_PARITY_DATA); skips when absent."""
    path = Path(os.environ.get("NLP_PARITY_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    return path
