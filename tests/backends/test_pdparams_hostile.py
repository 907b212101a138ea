"""The PaddleNLP .pdparams reader against broken and hostile files: a fuzz of small real files (our
streaming writer's protocol 4, and protocol 2 as paddle.save writes numpy state dicts) never ends in
another exception than WeightsError, a hang, or tensors other than the ones the pickle holds; crafted
pickles that would allocate without bound or name files are refused before anything is read."""
from __future__ import annotations

import io
import json
import pickle
from collections import OrderedDict

import numpy as np
import pytest

from backends.checkpoints.formats import paddlenlp
from backends.errors import WeightsError

FUZZ_CASES = 300


def state_dict() -> dict:
    rng = np.random.default_rng(0)
    return {"embeddings.word_embeddings.weight": rng.standard_normal((128, 160)).astype(np.float32),  # > 64 KiB
            "encoder.layer.0.weight": rng.standard_normal((8, 6)).astype(np.float32).T,  # Fortran order
            "encoder.layer.0.bias": rng.standard_normal(6).astype(np.float16),
            "position_ids": np.arange(10, dtype=np.int64), "empty": np.zeros((0, 4), np.float32)}


@pytest.fixture(scope="module", params=["writer", "protocol2"])
def pdparams(request, tmp_path_factory) -> bytes:
    state = state_dict()
    if request.param == "protocol2":
        return pickle.dumps(state, protocol=2)
    directory = tmp_path_factory.mktemp("pdparams")
    specs = [(name, a.dtype, a.shape) for name, a in state.items()]
    paddlenlp.write(directory, {"architectures": ["BertModel"]}, specs, lambda name: state[name], None)
    return (directory / paddlenlp.WEIGHTS).read_bytes()


def read_all(directory) -> dict:
    source = paddlenlp.read(directory)
    try:
        return {name: ref.load() for name, ref in source.tensors.items()}
    finally:
        source.close()


class Reference(pickle.Unpickler):
    """The standard unpickler limited to what numpy state dicts use (the oracle)."""

    def find_class(self, module, name):
        if (module, name) not in paddlenlp._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def directory_with(tmp_path, data: bytes):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / paddlenlp.WEIGHTS).write_bytes(data)
    return tmp_path


OPCODES = [op.code.encode("latin-1")[0] for op in paddlenlp.pickletools.opcodes]


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    kind = rng.integers(3)
    if kind == 0:
        cut = int(rng.integers(len(data)))
        return f"truncated at {cut}", data[:cut]
    changed = bytearray(data)
    # most of the file is tensor bytes: aim half of the changes at the pickle's first and last 400 bytes
    at = int(rng.integers(len(data))) if rng.integers(2) else int(rng.choice(
        [rng.integers(min(400, len(data))), len(data) - 1 - rng.integers(min(400, len(data)))]))
    if kind == 1:
        changed[at] ^= 1 << int(rng.integers(8))
        return f"bit flip at {at}", bytes(changed)
    changed[at] = int(rng.choice(OPCODES))
    return f"byte {at} -> opcode {chr(changed[at])!r}", bytes(changed)


def test_fuzz_pdparams(tmp_path, pdparams, deadline):
    directory = directory_with(tmp_path, pdparams)
    original = read_all(directory)
    assert {k: v.tobytes() for k, v in original.items()} == {k: v.tobytes() for k, v in state_dict().items()}
    rng = np.random.default_rng(7)
    outcomes = {"refused": 0, "read": 0}
    for _ in range(FUZZ_CASES):
        what, changed = mutate(pdparams, rng)
        (directory / paddlenlp.WEIGHTS).write_bytes(changed)
        try:
            tensors = read_all(directory)
        except WeightsError as exc:
            assert str(exc).startswith(f"{directory / paddlenlp.WEIGHTS}: ") and "\n" not in str(exc), what
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        try:  # what the pickle holds, unpickled in full by the standard unpickler
            expected = dict(Reference(io.BytesIO(changed)).load())
            expected.pop(paddlenlp._NAME_TABLE, None)
        except Exception:  # it refuses the stream (a frame length we skip): the content must be the original
            expected = original
        assert tensors.keys() == expected.keys(), what
        for name, array in tensors.items():
            want = np.asarray(expected[name])
            assert array.dtype == want.dtype and array.shape == want.shape, (what, name)
            assert np.array_equal(array, want, equal_nan=True) or array.tobytes() == want.tobytes(), (what, name)
    assert outcomes["refused"] > FUZZ_CASES // 4 and outcomes["read"] > 0, outcomes


class Call:
    """Pickles as a call of `function` with `args` (then `state` set on the result, if given)."""

    def __init__(self, function, *args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) if self.state is None else (self.function, self.args, self.state)


def array_state(shape, dtype="f4", data=b"") -> Call:
    """A pickled numpy array with any state (numpy pickles arrays as _reconstruct + __setstate__)."""
    return Call(np.ndarray.__reduce__(np.ones(1))[0], np.ndarray, (0,), b"b", state=(1, shape, np.dtype(dtype), False, data))


@pytest.mark.parametrize("payload,says", [
    # numpy.ndarray called from the pickle would allocate any size
    (pickle.dumps({"w": Call(np.ndarray, (1 << 40,))}, protocol=2), "numpy.ndarray directly"),
    # a length that points past the end of the file is refused before anything is read
    (pickle.PROTO + b"\x04" + pickle.BINBYTES8 + (1 << 62).to_bytes(8, "little"), "truncated: BINBYTES8"),
    # split-array table naming slices that do not exist
    (pickle.dumps({"w": np.ones(2, np.float32), paddlenlp._BIG_PARAMS: {"big": {"OriginShape": [4], "slices": ["x"]}}},
                  protocol=2), "split array big"),
    (pickle.dumps({"w": np.ones(2, np.float32), paddlenlp._BIG_PARAMS: {"big": ["w"]}}, protocol=2),
     "not {OriginShape, slices}"),
    # split-array slices that do not hold the shape
    (pickle.dumps({"a": np.ones(2, np.float32), "b": np.ones(2, np.float32),
                   paddlenlp._BIG_PARAMS: {"big": {"OriginShape": [5], "slices": ["a", "b"]}}}, protocol=2),
     "do not hold its shape"),
    (pickle.dumps({1: np.ones(2, np.float32)}, protocol=2), "named 1, not a string"),
    (pickle.dumps({"w": np.array(["text"])}, protocol=2), "not a readable paddle state dict"),
    (pickle.dumps(OrderedDict(w=array_state((0, 1 << 62))), protocol=4), "not a tuple of sizes numpy can hold"),
    (pickle.dumps({"w": array_state((-1, 2))}, protocol=2), "not a tuple of sizes numpy can hold"),
    (pickle.dumps({"w": array_state((2,), "f4", b"12345678" * 2)}, protocol=2), "has 16 bytes"),
    (pickle.dumps({"w": array_state((1,), "S4", b"abcd")}, protocol=2), "not plain numeric data"),
], ids=["ndarray-call", "huge-length", "missing-slice", "bad-table", "slice-sizes", "int-name", "strings", "huge-shape",
        "negative-shape", "size", "bytes-dtype"])
def test_crafted_pdparams_are_refused(tmp_path, payload, says):
    directory = directory_with(tmp_path, payload)
    with pytest.raises(WeightsError) as error:
        read_all(directory)
    assert str(error.value).startswith(f"{directory / paddlenlp.WEIGHTS}: ") and says in str(error.value)


def test_split_arrays_are_joined(tmp_path):
    """paddle.save's table of arrays split into slices (protocol 2/3, over 1 GiB) still reads."""
    whole = np.arange(12, dtype=np.float32).reshape(3, 4)
    state = {"big@@.0": whole.reshape(-1)[:7].copy(), "big@@.1": whole.reshape(-1)[7:].copy(),
             paddlenlp._BIG_PARAMS: {"big": {"OriginShape": [3, 4], "slices": ["big@@.0", "big@@.1"]}}}
    assert np.array_equal(read_all(directory_with(tmp_path, pickle.dumps(state, protocol=2)))["big"], whole)
