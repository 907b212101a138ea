"""Streaming safetensors I/O with numpy: write tensor by tensor, read tensor by tensor with a validated header.

The `safetensors` package writes a whole dict at once; parity and the converters write models far
larger than one tensor, so the writer here lays out the header first and streams each tensor's bytes
after it (the format is an 8-byte little-endian header length, a JSON header, then the raw bytes).
Every write goes to a temporary name and is renamed at the end: no half-written file survives.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from .errors import BadInput, WeightsError

# numpy dtype name -> safetensors code. Keyed by name: numpy lacks bfloat16, and ml_dtypes, which brings it, takes
# half a second to import (a third of a small conversion), so it is imported only for a file that holds one
DTYPE_CODES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


def partial_path(path: Path) -> Path:
    """The temporary sibling `.NAME.partial-PID` this process writes `path` under, after removing the
    ones that processes no longer alive left behind (killed with SIGKILL, or by a crash of the machine):
    said on stderr, one line each. A process still running keeps its own."""
    path = Path(path)
    prefix = f".{path.name}.partial-"
    try:
        siblings = [s for s in path.parent.iterdir() if s.name.startswith(prefix)] if path.parent.is_dir() else []
    except OSError:  # an unreadable folder: the write reports it
        siblings = []
    for stale in siblings:
        pid = stale.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
            except OSError as exc:
                print(f"warning: cannot remove {stale}, left by process {pid}, which has ended ({exc.strerror})",
                      file=sys.stderr)
            else:
                print(f"note: removed {stale}, left by process {pid}, which has ended", file=sys.stderr)
    return path.with_name(f"{prefix}{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = partial_path(path)
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
        header[name] = {"dtype": DTYPE_CODES[dtype.name], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
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
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit
MAX_DIMS = 64  # numpy's


class SafetensorsReader(Mapping):
    """Read-only mapping name -> numpy array over one safetensors file, one tensor read per access.

    The one safetensors reader of the project (converters, parity, tasks). The header is validated as
    the safetensors library does before anything is read: a JSON object of entries {dtype, shape,
    data_offsets} with known dtype codes, non-negative integer shapes and offsets, byte ranges that match
    the shapes and tile the data section exactly (no overlap, gap or shift: one tensor's bytes can never
    be read as another's), and a file that ends where the last tensor does. Any violation is a
    `WeightsError` naming the file and the entry.

    Tensors are read with positioned reads into private buffers, not through a memory map: a process
    that walks a file of several GB (the parity comparison, a conversion) then holds one tensor at a
    time, not every page it touched, and the reads release the GIL.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: no such file")
        with open(self.path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{self.path}: not a safetensors file (only {size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if not 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
                raise WeightsError(f"{self.path}: not a safetensors file or truncated "
                                   f"(header length {length}, file {size} bytes)")
            blob = f.read(length)
        try:
            header = json.loads(blob.decode("utf-8"), object_pairs_hook=unique_keys)
        except (UnicodeDecodeError, ValueError) as exc:  # json errors are ValueErrors
            raise WeightsError(f"{self.path}: corrupt safetensors header ({exc})") from None
        except RecursionError:
            raise WeightsError(f"{self.path}: corrupt safetensors header (nested too deeply)") from None
        if not isinstance(header, dict):
            raise WeightsError(f"{self.path}: corrupt safetensors header (a JSON {type(header).__name__}, "
                               "not an object)")
        self._base = 8 + length
        self._metadata = _metadata(header.pop("__metadata__", None), self.path)
        self._entries = dict(sorted(((name, _entry(name, info, self.path)) for name, info in header.items()),
                                    key=lambda item: (item[1][2], math.prod(item[1][1]) > 0)))  # empty first
        _check_layout(self._entries, self._base, size, self.path)

    def metadata(self) -> dict:
        return dict(self._metadata)

    def shape(self, name: str) -> tuple:
        return self._entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self._entries[name][0]

    def __getitem__(self, name: str) -> np.ndarray:
        dtype, shape, begin = self._entries[name]
        with open(self.path, "rb", buffering=0) as handle:
            array = read_exact(handle, self._base + begin, shape, dtype.newbyteorder("<"), self.path)
        return array.astype(dtype, copy=False)

    def chunks(self, name: str, elements: int):
        """The tensor's values in C order as flat arrays of at most `elements` values, one positioned read
        each: a process walking tensors of several GB this way holds one chunk of each at a time."""
        dtype, shape, begin = self._entries[name]
        total, step = math.prod(shape), max(1, int(elements))
        with open(self.path, "rb", buffering=0) as handle:
            for start in range(0, total, step):
                count = min(step, total - start)
                chunk = read_exact(handle, self._base + begin + start * dtype.itemsize, (count,),
                                   dtype.newbyteorder("<"), self.path)
                yield chunk.astype(dtype, copy=False)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def unique_keys(pairs: list) -> dict:
    """A JSON object whose keys are all different (json keeps the last of repeated keys silently: a
    repeated tensor name would hide an entry)."""
    found = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"key {key!r} appears twice")
        found[key] = value
    return found


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def bfloat16() -> np.dtype:
    """numpy's bfloat16 (from ml_dtypes, which TensorFlow and JAX install), imported when first asked for (see
    DTYPE_CODES)."""
    try:
        import ml_dtypes
    except ImportError:
        raise BadInput("bfloat16 needs the ml_dtypes package (pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a dtype name, bfloat16 included."""
    return bfloat16() if name == "bfloat16" else np.dtype(name)


def _entry(name: str, info, path: Path) -> tuple[np.dtype, tuple, int]:
    """(dtype, shape, first byte) of one header entry, every field checked."""
    if not isinstance(info, dict):
        raise WeightsError(f"{path}: header entry {name!r} is not an object")
    code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(code, str) or code not in CODE_DTYPES:
        raise WeightsError(f"{path}: {name}: unknown dtype {code!r} (known: {', '.join(CODE_DTYPES)})")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise WeightsError(f"{path}: {name}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        raise WeightsError(f"{path}: {name}: data_offsets {offsets!r} are not two increasing non-negative integers")
    dtype = numpy_dtype(CODE_DTYPES[code])
    if not array_fits(shape, dtype.itemsize):
        raise WeightsError(f"{path}: {name}: shape {shape} is larger than any array")  # numpy's limits
    need = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != need:
        raise WeightsError(f"{path}: {name} spans {offsets[1] - offsets[0]} bytes, its shape {shape} needs {need}")
    return dtype, tuple(shape), offsets[0]


def array_fits(shape, itemsize: int) -> bool:
    """Whether numpy can make an array of `shape` (non-negative sizes): at most 64 dimensions, and the
    non-zero sizes' product, in bytes, under 2**63 (numpy checks it even when a size is 0)."""
    return len(shape) <= MAX_DIMS and math.prod(max(d, 1) for d in shape) * itemsize < 2**63


def _check_layout(entries: dict, base: int, size: int, path: Path) -> None:
    """Entries (sorted by first byte) must tile the data section, bytes [base, size) of the file, exactly."""
    end, previous = 0, None
    for name, (dtype, shape, begin) in entries.items():
        if begin != end:
            where = f"after {previous}, which ends at data byte {end}" if previous else "at the start of the data"
            raise WeightsError(f"{path}: {name} starts at data byte {begin}; expected {end} {where} "
                               "(overlapping or shifted tensors)")
        end, previous = begin + math.prod(shape) * dtype.itemsize, name
    if base + end > size:
        raise WeightsError(f"{path}: truncated: {previous} ends at byte {base + end}, the file has {size}")
    if base + end < size:
        raise WeightsError(f"{path}: {size - base - end} trailing bytes after the last tensor "
                           f"({previous or 'none'}, ending at byte {base + end})")


def _metadata(metadata, path: Path) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsError(f"{path}: __metadata__ is not an object of strings")
    return metadata


def read_exact(handle, offset: int, shape: tuple, dtype: np.dtype, path) -> np.ndarray:
    """A new array of `shape` filled from `offset` of an unbuffered file (positioned reads)."""
    array = np.empty(shape, dtype)
    view = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        got = os.preadv(handle.fileno(), [view[done:]], offset + done)
        if not got:
            raise WeightsError(f"{path}: truncated at byte {offset + done}")
        done += got
    return array
