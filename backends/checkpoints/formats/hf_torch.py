"""transformers PyTorch directories: config.json + model.safetensors (or sharded, or pytorch_model.bin).

safetensors files are read tensor by tensor through `backends.tensorfile.SafetensorsReader` (positioned
reads into private buffers, not a memory map: pages of a map stay resident and count as the process's
memory, so a mapped model would cost its whole size; a read costs one tensor).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path


from backends.errors import WeightsError
from backends.tensorfile import SafetensorsReader, write_safetensors

from . import Source, TensorRef, bfloat16, first_file, read_json, sharding, write_json

TITLE = "transformers PyTorch"
FRAMEWORK = "torch"
MAX_SHARD_SIZE = "5GB"  # the default of transformers' PreTrainedModel.save_pretrained
CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def read(path: Path) -> Source:
    config = read_json(path / CONFIG)
    weights = first_file(path, WEIGHTS, "weights file")
    if weights.name.endswith(".index.json"):
        tensors, close = sharding.read(weights, _open)
    else:
        tensors, close = _open(weights)
    return Source(path, config, path / CONFIG, tensors, weights, close)


def write(path: Path, config: dict, specs, produce, rules, max_bytes: int | None = None) -> int:
    """config.json + model.safetensors, or shards of at most `max_bytes` and their index; the number of weights
    files."""
    write_json(path / CONFIG, config)
    return sharding.write(path, WEIGHTS[0], specs, max_bytes, partial(write_shard, produce=produce))


def write_shard(file: Path, specs, produce) -> None:
    """One safetensors file (a whole model or a shard), tensor by tensor."""
    write_safetensors(file, specs, produce, metadata={"format": "pt"})


def _open(path: Path):
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    return _open_safetensors(path) if path.suffix == ".safetensors" else _open_torch(path)


def _open_safetensors(path: Path):
    """Tensors of a safetensors file through the project's one validated reader, read on demand."""
    reader = SafetensorsReader(path)
    return {name: TensorRef(reader.shape(name), reader.dtype(name), partial(reader.__getitem__, name))
            for name in reader}, lambda: None


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
