"""Readers and writers of the checkpoint formats users load, one module per format.

A reader returns a `Source`: the config as a dict (transformers keys), the stored tensors as lazy
`TensorRef`s keyed by their stored names (what the family's rules for the format produce), and what to
close. A writer takes a config dict, (name, dtype, shape) specs, the family's `FormatRules` and a shard
size in bytes (None: one file), calls `produce(name)` for one tensor at a time, so no format ever holds a
model in memory unless the format itself forces it, and returns how many weights files it wrote. Sharded
checkpoints (shards + index, read and written the same way in every format) are `sharding`'s; each format
module's `write_shard(file, specs, produce)` writes one of its files. `MAX_SHARD_SIZE` is the default of the
format's save_pretrained.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from backends import tensorfile
from backends.errors import BadInput, ConfigError
from backends.tensorfile import unique_keys

# format name -> module (hf: transformers PyTorch, tf: transformers TF h5, paddle: PaddleNLP, tf1bert: Google)
MODULES = {"hf": "hf_torch", "tf": "hf_tf", "paddle": "paddlenlp", "tf1bert": "tf1_bert"}


@dataclass(frozen=True)
class TensorRef:
    """One stored tensor: its shape and dtype as stored, and how to read it."""

    shape: tuple
    dtype: np.dtype
    load: Callable[[], np.ndarray]


@dataclass
class Source:
    path: Path
    config: dict
    config_file: Path  # named in error messages
    tensors: dict  # stored name -> TensorRef
    weights_file: Path  # named in error messages
    close: Callable[[], None] = field(default=lambda: None)
    concurrent_loads: bool = True  # TensorRef.load may run in several threads at once (positioned reads)


def get(fmt: str):
    """The module of format `fmt`."""
    if fmt not in MODULES:
        raise BadInput(f"unknown format {fmt!r}; known: {', '.join(MODULES)}")
    return importlib.import_module(f"{__name__}.{MODULES[fmt]}")


def read_json(path: Path, unique: bool = False) -> dict:
    """A JSON object from `path`, with a one-line error naming the file; `unique`: a key repeated in any
    object is an error (json keeps the last one silently)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys if unique else None)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a repeated key
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


bfloat16 = tensorfile.bfloat16  # numpy's bfloat16, ml_dtypes imported when first asked for


def is_bfloat16(dtype: np.dtype) -> bool:
    return np.dtype(dtype).name == "bfloat16"


def first_file(directory: Path, names, what: str) -> Path:
    """The first of `names` present in `directory`, or a one-line error."""
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise BadInput(f"{directory}: no {what} found (looked for {', '.join(names)})")


def write_at(handle, offset: int, array: np.ndarray) -> None:
    """Write the bytes of a C-contiguous array at `offset` of an unbuffered file (positioned writes,
    which release the GIL)."""
    view = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        done += os.pwrite(handle.fileno(), view[done:], offset + done)
