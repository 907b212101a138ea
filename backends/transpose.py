"""2-D transposes into new C-contiguous arrays: the copy behind every Linear kernel that the converters and the
parity workers' gradients move between torch's [out, in] and Paddle's or Keras' [in, out] layouts.

numpy's own copy of a transposed view walks one side element by element with a large stride (2.8 s per GB of
float32 on this machine). OpenBLAS's out-of-place transpose `cblas_?omatcopy`, in the OpenBLAS that numpy's wheels
bundle (numpy.libs, built as scipy-openblas64: 64-bit integers, symbols renamed `scipy_..64_`), moves blocks
through registers (0.26 s per GB); elsewhere (another numpy build, float16, integers) a tiled numpy copy does it
(0.7 s per GB). Both give the same bits: OpenBLAS scales by alpha = 1, which is exact for every value but
quiets a signalling NaN, so an array holding a NaN is copied again by the tiles.
"""
from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import numpy as np

# dtype -> (function, scalar type) of scipy-openblas64's CBLAS interface
_OMATCOPY = {np.dtype(np.float32): ("scipy_cblas_somatcopy64_", ctypes.c_float),
             np.dtype(np.float64): ("scipy_cblas_domatcopy64_", ctypes.c_double)}
_ROW_MAJOR, _TRANS = 101, 112  # CBLAS_ORDER.CblasRowMajor, CBLAS_TRANSPOSE.CblasTrans


def transpose(array: np.ndarray, rows: int = 8, cols: int = 1024) -> np.ndarray:
    """array.T of a 2-D array as a new C-contiguous array, bit for bit."""
    omatcopy = _omatcopy(array.dtype) if array.dtype in _OMATCOPY and array.flags.c_contiguous else None
    if omatcopy is not None and array.size:
        out = _blas_transpose(omatcopy, array)
        with np.errstate(over="ignore", invalid="ignore"):  # no NaN (or +inf and -inf: copied again all the same)
            if not np.isnan(np.add.reduce(out, axis=None)):
                return out
    return tiled_transpose(array, rows, cols)


def tiled_transpose(array: np.ndarray, rows: int = 8, cols: int = 1024) -> np.ndarray:
    """array.T copied in tiles of `rows` x `cols` source elements: each tile reads a few long rows and writes, per
    output row, a few adjacent elements."""
    out = np.empty(array.shape[::-1], array.dtype)
    for i in range(0, array.shape[0], rows):
        for j in range(0, array.shape[1], cols):
            out[j:j + cols, i:i + rows] = array[i:i + rows, j:j + cols].T
    return out


def _blas_transpose(omatcopy, array: np.ndarray) -> np.ndarray:
    height, width = array.shape
    out = np.empty((width, height), array.dtype)
    omatcopy(_ROW_MAJOR, _TRANS, height, width, 1.0, array.ctypes.data, width, out.ctypes.data, height)
    return out


@cache
def _omatcopy(dtype: np.dtype):
    """numpy's bundled OpenBLAS `?omatcopy` for `dtype`, checked once on a small matrix, or None."""
    name, scalar = _OMATCOPY[dtype]
    libraries = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libraries.glob("libscipy_openblas64_*.so")):
        try:
            function = getattr(ctypes.CDLL(str(path)), name)
        except (OSError, AttributeError):
            continue
        function.restype = None
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, scalar, ctypes.c_void_p,
                             ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
        probe = np.arange(35, dtype=dtype).reshape(5, 7)
        if np.array_equal(_blas_transpose(function, probe), probe.T):
            return function
    return None
