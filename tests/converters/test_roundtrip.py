"""Round trips hf -> paddle -> hf, hf -> tf -> hf and hf -> paddle -> tf -> paddle -> hf give back the same
bytes for every tensor, for every family and head; casts round-trip to the cast of the source."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from backends.checkpoints import open_checkpoint
from backends.checkpoints.formats import bfloat16
from backends.checkpoints.rules import format_rules

from .conftest import FAMILY_HEADS, convert, write_hf

CHAINS = {"paddle": ["hf2paddle", "paddle2hf"], "tf": ["hf2tf", "tf2hf"],
          "paddle-tf": ["hf2paddle", "paddle2tf", "tf2paddle", "paddle2hf"]}


def stored(path) -> dict:
    """name -> (dtype code, shape, raw bytes) of a safetensors file."""
    with safe_open(str(path), "numpy") as f:
        return {name: (f.get_slice(name).get_dtype(), f.get_slice(name).get_shape(), f.get_tensor(name).tobytes())
                for name in f.keys()}


def run_chain(tmp_path, source, commands, *options) -> object:
    current = source
    for index, command in enumerate(commands):
        target = tmp_path / f"{index}-{command}"
        assert convert(command, current, target, *options) == 0
        current = target
    return current


@pytest.mark.parametrize("family_name,head", FAMILY_HEADS)
@pytest.mark.parametrize("chain", CHAINS)
def test_round_trip_is_bit_identical(tmp_path, family_name, head, chain):
    if "paddle" in chain and head not in format_rules(family_name, "paddle").classes:
        pytest.skip(f"PaddleNLP has no {family_name} {head} class we convert")
    source = write_hf(tmp_path / "source", family_name, head)
    result = run_chain(tmp_path, source, CHAINS[chain])
    assert stored(result / "model.safetensors") == stored(source / "model.safetensors")
    assert (result / "vocab.txt").read_bytes() == (source / "vocab.txt").read_bytes()


def test_float16_round_trips_to_the_cast_source(tmp_path):
    source = write_hf(tmp_path / "source", "funnel", "model")
    cast = run_chain(tmp_path / "cast", source, ["hf2tf"], "--dtype", "float16")
    result = run_chain(tmp_path, cast, ["tf2paddle", "paddle2hf"])
    with safe_open(str(source / "model.safetensors"), "numpy") as original:
        expected = {name: original.get_tensor(name).astype(np.float16).tobytes() for name in original.keys()}
    got = stored(result / "model.safetensors")
    assert {name: raw for name, (_, _, raw) in got.items()} == expected
    assert {code for code, _, _ in got.values()} == {"F16"}
    assert json.loads((result / "config.json").read_text())["torch_dtype"] == "float16"


def test_bfloat16_is_stored_as_paddle_does(tmp_path, capsys):
    """paddle keeps bfloat16 as uint16 bits; reading gives the bfloat16 cast of the source back."""
    source = write_hf(tmp_path / "source", "funnel", "model")
    cast = run_chain(tmp_path / "cast", source, ["hf2paddle"], "--dtype", "bfloat16")
    checkpoint = open_checkpoint("paddle", cast)
    with safe_open(str(source / "model.safetensors"), "numpy") as original:
        for name in original.keys():
            got = checkpoint.load(name)
            assert got.dtype == bfloat16() and got.tobytes() == original.get_tensor(name).astype(bfloat16()).tobytes()
    checkpoint.close()
    assert convert("paddle2hf", cast, tmp_path / "hf") == 0
    back = open_checkpoint("hf", tmp_path / "hf")
    assert {code for code, _, _ in stored(tmp_path / "hf" / "model.safetensors").values()} == {"BF16"}
    with safe_open(str(source / "model.safetensors"), "numpy") as original:
        for name in original.keys():
            assert back.load(name).tobytes() == original.get_tensor(name).astype(bfloat16()).tobytes()
    back.close()
    assert convert("paddle2tf", cast, tmp_path / "tf") == 2  # h5 has no bfloat16
