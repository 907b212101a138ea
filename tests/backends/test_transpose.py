"""backends/transpose.py: the kernels' transposes give array.T bit for bit, whichever copy makes them (OpenBLAS's
omatcopy quiets signalling NaNs: such arrays must come out of the tiled copy)."""
from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from backends.transpose import _omatcopy, tiled_transpose, transpose
from backends.weights import ACTIONS

BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_bit_pattern_is_kept(dtype):
    bits = BITS[np.dtype(dtype)]
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(bits).max, (300, 700), dtype=bits, endpoint=True).view(dtype)  # NaNs of all kinds
    assert np.array_equal(transpose(array).view(bits), array.T.view(bits))
    finite = rng.standard_normal((300, 700)).astype(dtype)
    finite[3, 5], finite[7, 9], finite[1, 2] = np.finfo(dtype).smallest_subnormal, -0.0, -np.inf
    assert np.array_equal(transpose(finite).view(bits), finite.T.view(bits))


def test_numpy_wheels_use_openblas():
    """The fast copy is found in the OpenBLAS numpy's wheels bundle (a build without it falls back, slower)."""
    if not any(Path(np.__file__).resolve().parent.parent.glob("numpy.libs/libscipy_openblas64_*")):
        pytest.skip("this numpy does not bundle scipy-openblas64")
    assert _omatcopy(np.dtype(np.float32)) is not None and _omatcopy(np.dtype(np.float64)) is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.int32])
@pytest.mark.parametrize("shape", [(600, 500), (1, 300_000), (300_000, 1), (0, 400_000)])
def test_the_rules_transpose_is_the_transpose(dtype, shape):
    array = (np.random.default_rng(1).standard_normal(shape) * 100).astype(dtype)
    for source in (array, np.asfortranarray(array)):
        result = ACTIONS["transpose"][0](source)
        assert result.flags.c_contiguous and result.dtype == array.dtype and np.array_equal(result, array.T)
    assert np.array_equal(tiled_transpose(array), array.T)
