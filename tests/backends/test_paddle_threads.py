"""Paddle's CPU threads and memory: MKL gets every usable core unless the user set thread counts, and tensors up to
32 MiB come from glibc's heap unless the user chose the allocator (backends/_fw/paddle)."""
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


# after the adapter's import: whether it kept big blocks in the heap, and how many mmapped blocks a 24 MiB array
# adds (glibc's mallinfo2: hblks)
HEAP_PROBE = """
import ctypes
import numpy as np
from backends._fw import keep_freed_tensor_memory
import backends._fw.paddle

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblks
array = np.ones(24 << 17)  # 24 MiB of float64
print(keep_freed_tensor_memory(), libc.mallinfo2().hblks - before)
"""


def heap_probe(**settings) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    result = subprocess.run([sys.executable, "-c", HEAP_PROBE], capture_output=True, text=True, cwd=REPO,
                            env={**env, **settings, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="glibc's mallopt")
def test_tensors_up_to_32_mib_come_from_the_heap():
    assert heap_probe() == ["True", "0"]  # no mmapped block for the array
    # the user's allocator choice stands (the array then gets its own mapping: glibc's threshold is 128 KiB)
    assert heap_probe(MALLOC_ARENA_MAX="4") == ["False", "1"]
