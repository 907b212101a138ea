"""Streaming safetensors I/O with numpy: write tensor by tensor, read memory-mapped.

The `safetensors` package writes a whole dict at once; parity and the converters write models far
larger than one tensor, so the writer here lays out the header first and streams each tensor's bytes
after it (the format is an 8-byte little-endian header length, a JSON header, then the raw bytes).
Every write goes to a temporary name and is renamed at the end: no half-written file survives.
"""
from __future__ import annotations

import json
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

from .errors import WeightsError

DTYPE_CODES = {
    np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16", np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL", np.dtype(ml_dtypes.bfloat16): "BF16",  # numpy lacks bfloat16
}


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_safetensors(path, specs: Iterable[tuple[str, np.dtype, tuple]], produce: Callable[[str], np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors named in `specs` (name, dtype, shape), calling `produce(name)` for one at a time."""
    specs = [(name, np.dtype(dtype), tuple(int(d) for d in shape)) for name, dtype, shape in specs]
    header, offset = {}, 0
    for name, dtype, shape in specs:
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for name, dtype, shape in specs:
            array = np.asarray(produce(name))
            if array.shape != shape:
                raise WeightsError(f"{path}: tensor {name} has shape {array.shape}, announced {shape}")
            little_endian = np.ascontiguousarray(array, dtype=dtype).astype(dtype.newbyteorder("<"), copy=False)
            out.write(memoryview(little_endian.reshape(-1).view(np.uint8)))


def save_arrays(path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write an in-memory dict of arrays (small files: inputs, reports)."""
    specs = [(name, np.asarray(a).dtype, np.shape(a)) for name, a in arrays.items()]
    write_safetensors(path, specs, lambda name: arrays[name], metadata)


CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


class SafetensorsReader(Mapping):
    """Read-only mapping name -> numpy array over one safetensors file, one tensor read per access.

    Tensors are read with plain positioned reads, not a memory map: a process that walks a file of
    several GB (the parity comparison) then holds one tensor at a time, not every page it touched.
    The header is checked against the file size, so a truncated file fails here, naming the file.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: no such file")
        size = self.path.stat().st_size
        try:
            with open(self.path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > size - 8:
                    raise ValueError("header longer than the file")
                header = json.loads(f.read(length))
            self._metadata = header.pop("__metadata__", None) or {}
            self._base = 8 + length
            self._entries = {}
            for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
                dtype, shape = CODE_DTYPES[info["dtype"]], tuple(info["shape"])
                begin, end = info["data_offsets"]
                if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or self._base + end > size:
                    raise ValueError(f"tensor {name} does not fit the file (truncated?)")
                self._entries[name] = (dtype, shape, begin)
        except (ValueError, KeyError, TypeError, struct.error) as exc:  # json errors are ValueErrors
            raise WeightsError(f"{self.path}: not a readable safetensors file ({exc})") from None

    def metadata(self) -> dict:
        return dict(self._metadata)

    def shape(self, name: str) -> tuple:
        return self._entries[name][1]

    def __getitem__(self, name: str) -> np.ndarray:
        dtype, shape, begin = self._entries[name]
        count = int(np.prod(shape, dtype=np.int64))
        array = np.fromfile(self.path, dtype=dtype.newbyteorder("<"), count=count, offset=self._base + begin)
        return array.astype(dtype, copy=False).reshape(shape)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
