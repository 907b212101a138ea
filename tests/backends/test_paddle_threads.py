"""Paddle's CPU threads: MKL gets every usable core unless the user set thread counts (backends/_fw/paddle)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ..conftest import BACKENDS, REPO

pytestmark = pytest.mark.skipif("paddle" not in BACKENDS, reason="needs paddle")
PROBE = ("import os, backends._fw.paddle; "
         "print(os.environ.get('MKL_NUM_THREADS'), os.environ.get('OMP_NUM_THREADS'))")


def probe(**settings) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO,
                            env={**env, **settings, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("settings,expected", [
    ({}, [str(len(os.sched_getaffinity(0))), "1"]),  # paddle keeps OpenMP at 1; MKL gets the cores
    ({"OMP_NUM_THREADS": "1"}, ["None", "1"]),  # the user's choice stands
    ({"MKL_NUM_THREADS": "1"}, ["1", "1"]),
])
def test_mkl_threads(settings, expected):
    assert probe(**settings) == expected
