"""PaddleNLP directories: model_state.pdparams (a pickle of numpy arrays, as paddle.save writes it) +
config.json (and the legacy model_config.json), loaded by `paddlenlp.transformers.<Class>.from_pretrained`.

Reading never runs code from the file: a restricted unpickler accepts numpy arrays and plain containers
only. It also never holds the model: the pickle is first walked opcode by opcode and every large byte
payload is replaced by a reference to where it lies in the file, so unpickling yields array
descriptions whose bytes are read one tensor at a time.
Writing streams the same way: a protocol-4 pickler (which flushes frame by frame) asks for each array
only when it reaches it, and keeps no memo of what it wrote.
"""
from __future__ import annotations

import io
import math
import pickle
import pickletools
import struct
from collections import OrderedDict
from functools import partial
from pathlib import Path

import numpy as np

from backends.errors import WeightsError
from backends.tensorfile import array_fits, read_exact

from . import Source, TensorRef, bfloat16, first_file, is_bfloat16, read_json, sharding, write_json

TITLE = "PaddleNLP"
FRAMEWORK = "paddle"
MAX_SHARD_SIZE = "10GB"  # the default of PaddleNLP's PretrainedModel.save_pretrained
WEIGHTS = "model_state.pdparams"
CONFIGS = ("config.json", "model_config.json")
# paddle.save's own bookkeeping entries in a state dict
_NAME_TABLE, _BIG_PARAMS = "StructuredToParameterName@@", "UnpackBigParamInfor@@"  # typos: disable-line
_OPS = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_LENGTHS = {pickletools.TAKEN_FROM_ARGUMENT1: "<B", pickletools.TAKEN_FROM_ARGUMENT4: "<i",
            pickletools.TAKEN_FROM_ARGUMENT4U: "<I", pickletools.TAKEN_FROM_ARGUMENT8U: "<Q"}
_PAYLOADS = ("SHORT_BINBYTES", "BINBYTES", "BINBYTES8")
_REFUSED = ("PERSID", "BINPERSID", "NEXT_BUFFER", "READONLY_BUFFER")  # we use persistent ids ourselves
_INLINE = 1 << 16  # payloads below this stay in the skeleton


def read(path: Path) -> Source:
    config_file = first_file(path, CONFIGS, "config")
    config = _read_config(config_file)
    weights = sharding.weights_file(path, WEIGHTS)
    if weights is None:
        raise WeightsError(f"{path / WEIGHTS}: no such file (nor its sharded index {sharding.index_name(WEIGHTS)})")
    if weights.name == WEIGHTS:
        tensors, close = read_state_file(weights)
    else:
        tensors, close = sharding.read(weights, read_state_file)
    return Source(path, config, config_file, tensors, weights, close)


def write(path: Path, config: dict, specs, produce, rules, max_bytes: int | None = None) -> int:
    """config.json, the legacy model_config.json and model_state.pdparams, or shards of at most `max_bytes`
    (model_state-00001-of-00002.pdparams ...) and their index; the number of weights files."""
    write_json(path / CONFIGS[0], config)
    legacy = {key: value for key, value in config.items() if key != "architectures"}
    write_json(path / CONFIGS[1], {**legacy, "init_class": config["architectures"][0]})
    return sharding.write(path, WEIGHTS, specs, max_bytes, partial(write_shard, produce=produce))


def write_shard(file: Path, specs, produce) -> None:
    """One .pdparams file (a whole model or a shard): a state dict pickled as paddle.save does, each array produced when the pickler reaches it."""
    state = {name: _Pending(partial(produce, name)) for name, _, _ in specs}
    with open(file, "wb") as out:
        pickler = _Pickler(out, protocol=4)
        pickler.fast = True  # no memo: nothing written is kept alive
        pickler.dump(state)


def read_state_file(weights: Path):
    """(stored name -> TensorRef, close) of one .pdparams file (a whole model, a shard, an adapter)."""
    if not weights.is_file():
        raise WeightsError(f"{weights}: no such file")
    handle = open(weights, "rb", buffering=0)
    try:
        return _state_dict(weights, handle), handle.close
    except BaseException:
        handle.close()
        raise


def _read_config(path: Path) -> dict:
    """config.json, or a legacy model_config.json ({"init_args": [...], "init_class": ...}) flattened."""
    data = read_json(path)
    for args in data.pop("init_args", []):
        if isinstance(args, dict):
            for key, value in args.items():
                data.setdefault(key, value)
    if "init_class" in data:
        data["architectures"] = [data.pop("init_class")]
    if "num_classes" in data:
        data.setdefault("num_labels", data.pop("num_classes"))
    data.pop("paddlenlp_version", None)
    return data


class _Pending:
    """An array not yet produced (the pickler asks for it when it gets there)."""

    __slots__ = ("produce",)

    def __init__(self, produce):
        self.produce = produce


class _Payload:
    """An array's bytes, pickled as numpy pickles them (a bytes object) but written from the array's own memory."""

    __slots__ = ("data",)

    def __init__(self, array: np.ndarray):
        self.data = memoryview(array.reshape(-1).view(np.uint8))


class _Pickler(pickle._Pickler):
    """The standard library's Python pickler, protocol 4, writing each array as numpy's own reduction does
    (`_reconstruct` and a state ending in the bytes) but with the bytes written straight from the array:
    numpy's `__reduce__` copies them into a new bytes object first (a third of hf2paddle's time went to that
    copy). The C pickler only writes true bytes objects; the Python one writes a payload through its framer's
    `write_large_bytes`, the path it takes for bytes of 64 KiB or more, so the file holds the same opcodes."""

    dispatch = {**pickle._Pickler.dispatch}

    def reducer_override(self, obj):
        if type(obj) is not _Pending:
            return NotImplemented
        # np.require, not np.ascontiguousarray: the latter returns a 0-d array as shape (1,), which paddle.load
        # then reads back (a scalar weight would change shape through the converter)
        array = np.require(obj.produce(), requirements="C")
        array = array.view(np.uint16) if is_bfloat16(array.dtype) else array  # paddle: bfloat16 as its bits
        rebuild, args, (version, _, dtype, _, _) = np.empty(0, array.dtype).__reduce__()
        return rebuild, args, (version, array.shape, dtype, False, _Payload(array))

    def save_payload(self, payload: _Payload) -> None:
        """What `save_bytes` writes for bytes of that length (BINBYTES8 beyond 4 GiB), minus the copy."""
        size = len(payload.data)
        if size <= 0xff:
            self.write(pickle.SHORT_BINBYTES + struct.pack("<B", size) + payload.data.tobytes())
        elif size > 0xffffffff:
            self.framer.write_large_bytes(pickle.BINBYTES8 + struct.pack("<Q", size), payload.data)
        elif size >= self.framer._FRAME_SIZE_TARGET:
            self.framer.write_large_bytes(pickle.BINBYTES + struct.pack("<I", size), payload.data)
        else:
            self.write(pickle.BINBYTES + struct.pack("<I", size) + payload.data.tobytes())

    dispatch[_Payload] = save_payload


# ---- reading ----

class _Stored:
    """Where a byte payload lies in the file."""

    def __init__(self, offset: int, length: int):
        self.offset, self.length = offset, length


class _NdarrayClass:
    """numpy.ndarray as a pickle names it: only the first argument of `_reconstruct`, never called (calling
    numpy.ndarray from a pickle could allocate any size)."""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("the pickle calls numpy.ndarray directly")


class _Array:
    """A pickled numpy array: shape, dtype and either its bytes or where they lie in the file."""

    def __init__(self, cls, shape, typecode):
        if cls is not _NdarrayClass:
            raise pickle.UnpicklingError("numpy _reconstruct of something other than numpy.ndarray")
        self.raw = None  # until the pickle sets the state

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array state that is not (version, shape, dtype, fortran, data)")
        shape, dtype, fortran, raw = state[-4:]  # version 1 states lead with the version
        if not (isinstance(dtype, np.dtype) and dtype.kind in "biufc" and dtype.subdtype is None
                and dtype.names is None and isinstance(raw, (bytes, _Stored))):
            raise pickle.UnpicklingError("an array that is not plain numeric data")
        if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)
                and array_fits(shape, dtype.itemsize)):
            raise pickle.UnpicklingError(f"an array of shape {shape!r}, not a tuple of sizes numpy can hold")
        self.shape, self.dtype, self.fortran, self.raw = shape, dtype, bool(fortran), raw

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def load(self, handle, path) -> np.ndarray:
        shape = self.shape[::-1] if self.fortran else self.shape
        if isinstance(self.raw, _Stored):
            array = read_exact(handle, self.raw.offset, shape, self.dtype, path)
        else:
            array = np.frombuffer(self.raw, self.dtype).reshape(shape).copy()
        return array.T if self.fortran else array


def _latin1(text, encoding="latin1"):
    """`_codecs.encode` as protocol-2 pickles use it for bytes, limited to that use."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode used for something other than latin-1 bytes")
    return text.encode("latin-1")


def _empty_bytes():
    """`bytes()` as protocol-2 pickles write empty bytes (an empty array's data); no argument, no size."""
    return b""


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _Array, ("numpy._core.multiarray", "_reconstruct"): _Array,
    ("numpy", "ndarray"): _NdarrayClass, ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict, ("_codecs", "encode"): _latin1,
    ("__builtin__", "bytes"): _empty_bytes, ("builtins", "bytes"): _empty_bytes,
}


class _Unpickler(pickle.Unpickler):
    """Builds numpy array descriptions and plain containers; refuses every other global."""

    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise WeightsError(f"{self.path}: refusing to load: the pickle calls {module}.{name} "
                               "(only numpy arrays and plain containers are allowed)")
        return _ALLOWED[module, name]

    def persistent_load(self, pid):
        offset, length = pid.split(":")
        return _Stored(int(offset), int(length))


def _skeleton(path: Path) -> bytes:
    """The pickle without FRAMEs and with each large byte payload replaced by a persistent id
    "offset:length" that names where it lies in the file."""
    with open(path, "rb") as reader:
        return _walk(reader, path, path.stat().st_size)


def _walk(reader, path: Path, size: int) -> bytes:
    out = io.BytesIO()

    def take(n: int) -> bytes:
        data = reader.read(n)
        if len(data) != n:
            raise WeightsError(f"{path}: truncated (the pickle ends before its STOP opcode)")
        return data

    position = 0
    while True:
        code = take(1)
        op = _OPS.get(code)
        if op is None:
            raise WeightsError(f"{path}: not a pickle (unknown opcode {code!r} at byte {position})")
        if op.name in _REFUSED:
            raise WeightsError(f"{path}: refusing to load: the pickle uses {op.name}")
        arg, raw = op.arg, b""
        if arg is not None and arg.n >= 0:
            raw = take(arg.n)
        elif arg is not None and arg.n == pickletools.UP_TO_NEWLINE:  # GLOBAL and INST take two lines
            raw = b"".join(reader.readline() for _ in range(2 if arg is pickletools.stringnl_noescape_pair else 1))
            if not raw.endswith(b"\n"):
                raise WeightsError(f"{path}: truncated (the pickle ends before its STOP opcode)")
        elif arg is not None:
            head = take(struct.calcsize(_LENGTHS[arg.n]))
            length = struct.unpack(_LENGTHS[arg.n], head)[0]
            if length < 0:
                raise WeightsError(f"{path}: corrupt pickle (negative length at byte {position})")
            start = position + 1 + len(head)
            if start + length > size:  # before reading: a corrupt length would allocate up to 2**64 bytes
                raise WeightsError(f"{path}: truncated: {op.name} at byte {position} holds {length} bytes, "
                                   f"the file has {size}")
            if op.name in _PAYLOADS and length >= _INLINE:
                reader.seek(start + length)
                token = f"{start}:{length}".encode()
                out.write(pickle.SHORT_BINUNICODE + bytes([len(token)]) + token + pickle.BINPERSID)
                position = start + length
                continue
            raw = head + take(length)
        position += 1 + len(raw)
        if op.name != "FRAME":
            out.write(code + raw)
        if op.name == "STOP":
            return out.getvalue()


def _state_dict(path: Path, handle) -> dict:
    """Stored name -> TensorRef of a .pdparams file."""
    try:
        state = _Unpickler(_skeleton(path), path).load()
    except WeightsError:
        raise
    except Exception as exc:  # a corrupt stream raises many types inside the unpickler
        raise WeightsError(f"{path}: not a readable paddle state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    state.pop(_NAME_TABLE, None)
    big = state.pop(_BIG_PARAMS, {})
    arrays = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise WeightsError(f"{path}: holds an entry named {name!r}, not a string")
        if not isinstance(value, _Array) or value.raw is None:
            raise WeightsError(f"{path}: {name} holds a {type(value).__name__}, not an array")
        stored = value.raw.length if isinstance(value.raw, _Stored) else len(value.raw)
        if stored != value.nbytes:
            raise WeightsError(f"{path}: {name} has {stored} bytes, its shape {list(value.shape)} needs {value.nbytes}")
        arrays[name] = value
    tensors = {name: _ref(a.shape, a.dtype, partial(a.load, handle, path)) for name, a in arrays.items()}
    for name, (shape, parts) in _big_params(big, arrays, path).items():
        def load(parts=parts, shape=shape):
            return np.concatenate([part.load(handle, path).reshape(-1) for part in parts]).reshape(shape)

        tensors[name] = _ref(shape, parts[0].dtype, load)
        for part in parts:
            del tensors[part.name]
    return tensors


def _big_params(big, arrays: dict, path: Path) -> dict:
    """name -> (shape, slices) of the arrays over 1 GiB that paddle.save (protocol 2/3) split into slices
    ({name: {"OriginShape": shape, "slices": [slice names]}}), each checked: the slices exist, are used
    once, share a dtype and hold exactly the shape's elements."""
    if not isinstance(big, dict):
        raise WeightsError(f"{path}: {_BIG_PARAMS} is not a table of split arrays")
    found, used = {}, set()
    for name, info in big.items():
        shape = info.get("OriginShape") if isinstance(info, dict) else None
        names = info.get("slices") if isinstance(info, dict) else None
        if not (isinstance(name, str) and isinstance(shape, (list, tuple)) and isinstance(names, list) and names
                and all(type(d) is int and d >= 0 for d in shape)):
            raise WeightsError(f"{path}: {_BIG_PARAMS} entry {name!r} is not {{OriginShape, slices}}")
        missing = [part for part in names if not isinstance(part, str) or part not in arrays or part in used]
        if missing or name in arrays:
            raise WeightsError(f"{path}: split array {name}: slice {(missing or [name])[0]!r} is missing, repeated "
                               "or a name in use")
        used.update(names)
        parts = [arrays[part] for part in names]
        for part, part_name in zip(parts, names):
            part.name = part_name
        if len({part.dtype for part in parts}) > 1 or sum(p.nbytes for p in parts) != \
                math.prod(shape) * parts[0].dtype.itemsize or not array_fits(shape, parts[0].dtype.itemsize):
            raise WeightsError(f"{path}: split array {name}: its slices do not hold its shape {list(shape)}")
        found[name] = (tuple(shape), parts)
    return found


def _ref(shape: tuple, dtype: np.dtype, load) -> TensorRef:
    """paddle stores bfloat16 as uint16 bits."""
    if dtype == np.uint16:
        return TensorRef(shape, bfloat16(), lambda: load().view(bfloat16()))
    return TensorRef(shape, dtype, load)
