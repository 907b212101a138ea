"""Sharded checkpoints: one weights file split into `NAME-0000i-of-0000n.EXT` files beside an index
`NAME.EXT.index.json` = {"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}, as
save_pretrained(max_shard_size=...) writes them: transformers' safetensors (model.safetensors) and TF h5
(tf_model.h5), PaddleNLP's .pdparams (model_state.pdparams).

Shards are planned as the libraries plan them: tensors in order, a new shard when the next tensor would
take the current one past the limit, and a tensor larger than the limit alone in its own shard. Writing
streams one shard at a time (each format writes a shard tensor by tensor); reading opens every shard
lazily and checks the index against the shards' contents before any tensor is read: every shard named
exists, every tensor named is in its shard, and no tensor is in two shards or in a shard the index does
not name for it.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable

import numpy as np

from backends.errors import BadInput, WeightsError

from . import read_json, write_json

# save_pretrained's syntax (transformers' and PaddleNLP's `convert_file_size_to_int`): "5GB", "500MB", "1GiB";
# a lowercase final "b" counts bits ("5Gb" = 5GB / 8); plain digits are bytes
_UNITS = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
_SIZE = re.compile(r"(\d+)\s*((?:k|m|g)i?b)?", re.IGNORECASE)


def parse_size(value, option: str = "--max-shard-size") -> int:
    """Bytes of a shard size as save_pretrained reads it: an int, or digits and a unit (KB, MB, GB: powers of
    10; KiB, MiB, GiB: powers of 2; a lowercase final b in KB/MB/GB counts bits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.fullmatch(str(value).strip())
        if not match:
            raise BadInput(f"{option} {value!r}: not a size (an integer number of bytes, or digits and a unit: "
                           "KB, MB, GB, KiB, MiB, GiB; e.g. 5GB, 500MB)")
        digits, unit = match.groups()
        size = int(digits) * _UNITS[unit.lower()] if unit else int(digits)
        if unit and unit[-1] == "b" and "i" not in unit.lower():  # transformers: "5Gb" is gigabits
            size //= 8
    if size <= 0:
        raise BadInput(f"{option} {value!r}: must be at least one byte")
    return size


def nbytes(dtype, shape) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def plan(specs: list, max_bytes: int | None) -> list[list]:
    """`specs` (name, dtype, shape) split into shards of at most `max_bytes` each, in order; a tensor larger than
    the limit gets a shard of its own. One shard (everything) when `max_bytes` is None."""
    if max_bytes is None:
        return [list(specs)]
    shards, current, size = [], [], 0
    for spec in specs:
        tensor = nbytes(spec[1], spec[2])
        if current and size + tensor > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(spec)
        size += tensor
        if size > max_bytes:  # a tensor over the limit: alone (the shard before it was just closed)
            shards.append(current)
            current, size = [], 0
    if current or not shards:
        shards.append(current)
    return shards


def index_name(weights: str) -> str:
    """model.safetensors -> model.safetensors.index.json"""
    return f"{weights}.index.json"


def shard_name(weights: str, number: int, count: int) -> str:
    """model.safetensors -> model-00001-of-00003.safetensors (number counts from 1)."""
    stem, dot, suffix = weights.rpartition(".")
    return f"{stem}-{number:05d}-of-{count:05d}{dot}{suffix}"


def write(path: Path, weights: str, specs: list, max_bytes: int | None,
          write_file: Callable[[Path, list], None], index_key: Callable[[str], str] = str) -> int:
    """Write `specs` as `weights` in folder `path`, or, when they exceed `max_bytes`, as numbered shards and their
    index (keys `index_key(name)`: TF names its weights with the model scope there); `write_file(file, specs)`
    writes one file, tensor by tensor. Returns the number of files written."""
    shards = plan(specs, max_bytes)
    if len(shards) == 1:
        write_file(path / weights, shards[0])
        return 1
    weight_map = {}
    for number, shard in enumerate(shards, 1):
        name = shard_name(weights, number, len(shards))
        write_file(path / name, shard)
        weight_map.update({index_key(spec[0]): name for spec in shard})
    total = sum(nbytes(dtype, shape) for _, dtype, shape in specs)
    write_json(path / index_name(weights), {"metadata": {"total_size": total}, "weight_map": weight_map})
    return len(shards)


def weights_file(path: Path, weights: str) -> Path | None:
    """The single weights file `weights` in `path`, else its index, else None."""
    for name in (weights, index_name(weights)):
        if (path / name).is_file():
            return path / name
    return None


def read(index: Path, open_shard: Callable[[Path], tuple[dict, Callable]],
         stored_name: Callable[[str], str] = str) -> tuple[dict, Callable]:
    """(stored name -> TensorRef over every shard, close) of the sharded checkpoint whose index is `index`;
    `open_shard(file)` gives (stored name -> TensorRef, close) of one shard, `stored_name(key)` the stored name
    of an index key. The index is checked against the shards before anything is read."""
    folder = index.parent
    data = read_json(index, unique=True)
    metadata, weight_map = data.get("metadata"), data.get("weight_map")
    if not isinstance(metadata, dict):
        raise WeightsError(f"{index}: metadata: {'missing' if metadata is None else 'not an object'} "
                           '(an index is {"metadata": {"total_size": ...}, "weight_map": {...}})')
    total = metadata.get("total_size", 0)
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise WeightsError(f"{index}: metadata.total_size is {total!r}, not a number of bytes")
    if not isinstance(weight_map, dict) or not weight_map:
        what = "missing" if weight_map is None else "empty" if weight_map == {} else "not an object"
        raise WeightsError(f"{index}: weight_map: {what} (expected an object of tensor name: shard file)")
    shard_of = {}
    for key, shard in weight_map.items():  # shards are files beside the index, nothing elsewhere
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise WeightsError(f"{index}: weight_map names {shard!r} for {key}: not a file name in {folder}")
        name = stored_name(key)
        if name in shard_of:
            raise WeightsError(f"{index}: weight_map lists {name} twice ({key})")
        shard_of[name] = shard
    shards = {}

    def close():
        for _, close_shard in shards.values():
            close_shard()

    try:
        for shard in sorted(set(shard_of.values())):
            if not (folder / shard).is_file():
                key = next(key for key, file in weight_map.items() if file == shard)
                raise WeightsError(f"{folder / shard}: no such file (named in {index.name} for {key})")
            shards[shard] = open_shard(folder / shard)
        for shard, (tensors, _) in shards.items():
            for name in tensors:
                if name not in shard_of:
                    raise WeightsError(f"{folder / shard}: holds {name}, which {index.name} does not list")
                if shard_of[name] != shard:
                    where = "too (a tensor in two shards)" if name in shards[shard_of[name]][0] else "(which lacks it)"
                    raise WeightsError(f"{folder / shard}: holds {name}, which {index.name} places in "
                                       f"{shard_of[name]} {where}")
        for name, shard in shard_of.items():
            if name not in shards[shard][0]:
                raise WeightsError(f"{folder / shard}: lacks {name}, listed in {index.name}")
    except BaseException:
        close()
        raise
    return {name: shards[shard][0][name] for name, shard in shard_of.items()}, close
