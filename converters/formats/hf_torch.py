"""transformers PyTorch directories: config.json + model.safetensors (or sharded, or pytorch_model.bin).

safetensors files are read tensor by tensor with positioned reads into private buffers, not through a
memory map: pages of a map stay resident (and count as the process's memory) until it is closed, so a
mapped model would cost its whole size; a read costs one tensor.
"""
from __future__ import annotations

import json
import struct
from functools import partial
from pathlib import Path

import numpy as np

from backends.errors import WeightsError
from backends.tensorfile import write_safetensors

from . import Source, TensorRef, bfloat16, first_file, read_exact, read_json, write_json

TITLE = "transformers PyTorch"
FRAMEWORK = "torch"
CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_CODES = {"F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64", "I32": "int32", "I16": "int16",
          "I8": "int8", "U8": "uint8", "BOOL": "bool"}
_MAX_HEADER = 100 << 20


def read(path: Path) -> Source:
    config = read_json(path / CONFIG)
    weights = first_file(path, WEIGHTS, "weights file")
    if weights.name.endswith(".index.json"):
        weight_map = read_json(weights).get("weight_map")
        if not isinstance(weight_map, dict):
            raise WeightsError(f"{weights}: no weight_map")
        shards = {}

        def close():
            for _, close_shard in shards.values():
                close_shard()

        try:
            for shard in sorted(set(weight_map.values())):
                shards[shard] = _open(path / shard)
            missing = [(name, shard) for name, shard in weight_map.items() if name not in shards[shard][0]]
            if missing:
                raise WeightsError(f"{path / missing[0][1]}: lacks {missing[0][0]}, listed in {weights.name}")
        except BaseException:
            close()
            raise
        tensors = {name: shards[shard][0][name] for name, shard in weight_map.items()}
        return Source(path, config, path / CONFIG, tensors, weights, close)
    tensors, close = _open(weights)
    return Source(path, config, path / CONFIG, tensors, weights, close)


def write(path: Path, config: dict, specs, produce, rules) -> None:
    write_json(path / CONFIG, config)
    write_safetensors(path / "model.safetensors", specs, produce, metadata={"format": "pt"})


def _open(path: Path):
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    return _open_safetensors(path) if path.suffix == ".safetensors" else _open_torch(path)


def _open_safetensors(path: Path):
    """Header of a safetensors file, checked against the file size; tensors read on demand."""
    size = path.stat().st_size
    handle = open(path, "rb", buffering=0)
    try:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < length <= min(size - 8, _MAX_HEADER):
            raise WeightsError(f"{path}: not a safetensors file or truncated "
                               f"(header length {length}, file {size} bytes)")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise WeightsError(f"{path}: corrupt safetensors header") from None
        tensors = {name: _safetensors_ref(path, handle, 8 + length, name, info)
                   for name, info in header.items() if name != "__metadata__"}
        if tensors:
            last = max(tensors, key=lambda name: header[name]["data_offsets"][1])
            if 8 + length + header[last]["data_offsets"][1] > size:
                raise WeightsError(f"{path}: truncated: {last} ends at byte "
                                   f"{8 + length + header[last]['data_offsets'][1]}, the file has {size}")
    except BaseException:
        handle.close()
        raise
    return tensors, handle.close


def _safetensors_ref(path, handle, base, name, info) -> TensorRef:
    try:
        code, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        dtype = bfloat16() if code == "BF16" else np.dtype(_CODES[code])
    except (KeyError, TypeError, ValueError):
        raise WeightsError(f"{path}: corrupt header entry for {name}") from None
    if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or begin < 0:
        raise WeightsError(f"{path}: {name} spans {end - begin} bytes, its shape {list(shape)} needs "
                           f"{int(np.prod(shape, dtype=np.int64)) * dtype.itemsize}")
    return TensorRef(shape, dtype, partial(read_exact, handle, base + begin, shape, dtype, path))


def _open_torch(path: Path):
    """pytorch_model.bin through torch.load(weights_only=True): no code from the file runs."""
    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports corrupt, truncated and refused pickles with many types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: cannot load ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")

    def ref(tensor):
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: move its bits
            return TensorRef(tuple(tensor.shape), bfloat16(), lambda: tensor.view(torch.int16).numpy().view(bfloat16()))
        return TensorRef(tuple(tensor.shape), torch.empty(0, dtype=tensor.dtype).numpy().dtype, tensor.numpy)

    return {name: ref(t) for name, t in state.items()}, state.clear
