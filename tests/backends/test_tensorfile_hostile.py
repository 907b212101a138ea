"""The safetensors reader against broken and hostile files: every malformed header field is a one-line
WeightsError naming the file and the entry, byte ranges must tile the data section, and a fuzz of a
real small checkpoint (truncations, header byte flips, hostile field values) never ends in another
exception, a hang, or tensors other than the ones the file holds."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from safetensors.numpy import load as reference_load

from backends import family
from backends.errors import WeightsError
from backends.tensorfile import SafetensorsReader, atomic_path, save_arrays, write_safetensors

FUZZ_CASES = 300


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny funnel model's weights (F32), with a few F16 and I64 tensors among them."""
    spec = family("funnel")
    config = spec.shrink(next(iter(spec.presets.values())).config)
    params = spec.init_params(config, "model", np.random.default_rng(0))
    arrays = {name: np.asarray(a, np.float16 if i % 7 == 3 else np.float32) for i, (name, a) in enumerate(params.items())}
    arrays["position_ids"] = np.arange(12, dtype=np.int64)
    arrays["empty"] = np.zeros((0, 3), np.float32)
    path = tmp_path_factory.mktemp("tensorfile") / "model.safetensors"
    save_arrays(path, arrays, {"format": "pt"})
    return path, arrays


def split(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def join(header, body: bytes, pad: bool = True) -> bytes:
    blob = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + body


def first_tensor(header: dict) -> str:
    return min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def second_tensor(header: dict) -> str:
    return sorted((k for k in header if k != "__metadata__" and header[k]["data_offsets"][0] !=
                   header[k]["data_offsets"][1]), key=lambda k: header[k]["data_offsets"][0])[1]


def with_field(field, value, name=first_tensor):
    def mutate(header):
        header[name(header)][field] = value
        return header
    return mutate


def shifted(header):
    """Every tensor after the first moved by 4 bytes (the first's last bytes are read as the second's)."""
    first = first_tensor(header)
    for key, info in header.items():
        if key not in ("__metadata__", first):
            info["data_offsets"] = [o - 4 for o in info["data_offsets"]]
    return header


def overlapping(header):
    """The second tensor's range moved onto the first's (same length): two names, the same bytes."""
    first, second = first_tensor(header), second_tensor(header)
    start = header[first]["data_offsets"][0]
    length = header[second]["data_offsets"][1] - header[second]["data_offsets"][0]
    header[second]["data_offsets"] = [start, start + length]
    return header


# case -> (mutation of the parsed header, what the one-line error says); each is a file a user sent us
MALFORMED = {
    "string-offsets": (with_field("data_offsets", ["0", "16"]), "data_offsets"),
    "float-offsets": (with_field("data_offsets", [0.0, 16.0]), "data_offsets"),
    "negative-shape": (with_field("shape", [-1, 4]), "shape"),
    "list-header": (lambda header: [header], "a JSON list, not an object"),
    "shifted": (shifted, "overlapping or shifted"),
    "overlapping": (overlapping, "overlapping or shifted"),
}


def malformed(case: str, data: bytes) -> bytes:
    header, body = split(data)
    return join(MALFORMED[case][0](header), body)


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_header_names_file_and_entry(tmp_path, checkpoint, case):
    path, _ = checkpoint
    header, _ = split(path.read_bytes())
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(malformed(case, path.read_bytes()))
    with pytest.raises(WeightsError) as error:
        SafetensorsReader(bad)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{bad}: ") and MALFORMED[case][1] in message
    if case != "list-header":  # names the entry
        assert (first_tensor(header) if "offsets" in case or "shape" in case else second_tensor(header)) in message


@pytest.mark.parametrize("text,says", [
    (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
     "'a' appears twice"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"a":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[0,0]}}', "larger than any array"),
    (b'{"a":{"dtype":"F32","shape":' + json.dumps([1] * 65).encode() + b',"data_offsets":[0,4]}}',
     "larger than any array"),
    (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"format":1}}', "__metadata__"),
    (b'{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}', "shape"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,0]}}', "data_offsets"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', "spans 4 bytes"),
    (b'{"a":{"dtype":"X9","shape":[1],"data_offsets":[0,4]}}', "unknown dtype"),
    (b'{"a":[0,4]}', "not an object"),
    (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', "at the start of the data"),
], ids=["repeated-key", "deep", "huge-shape", "65-dims", "metadata", "bool-dim", "reversed", "size", "dtype",
        "entry-list", "gap"])
def test_more_malformed_headers(tmp_path, text, says):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(join(text, b"\0" * 8))
    with pytest.raises(WeightsError, match=f"^{bad}: .*{says}"):
        SafetensorsReader(bad)


def test_empty_tensors_share_an_offset(tmp_path):
    """Zero-byte tensors may start where a tensor with bytes starts (any order in the header)."""
    path = tmp_path / "model.safetensors"
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}
    path.write_bytes(join(header, np.arange(2, dtype="<f4").tobytes()))
    read = dict(SafetensorsReader(path))
    assert read["a"].tolist() == [0, 1] and read["b"].shape == (0,)


# ---- fuzz ----

HOSTILE_VALUES = ["0", 1.5, -1, None, True, [], [[0]], {}, 2**64, -(2**63), [0, 0, 0], "F32", [1, -1], [2**62, 2**62]]


def mutations(data: bytes, rng: np.random.Generator):
    """(what, mutated file) pairs, drawn at random."""
    header, body = split(data)
    (length,) = struct.unpack("<Q", data[:8])
    names = [k for k in header if k != "__metadata__"]
    kind = rng.integers(7)
    if kind == 0:
        cut = int(rng.integers(len(data)))
        return f"truncated at {cut}", data[:cut]
    if kind == 1:  # a bit of the length or the header
        at = int(rng.integers(8 + length))
        flipped = bytearray(data)
        flipped[at] ^= 1 << int(rng.integers(8))
        return f"bit flip at {at}", bytes(flipped)
    if kind == 2:  # a byte of the header replaced by a JSON-significant character
        at = 8 + int(rng.integers(length))
        replaced = bytearray(data)
        replaced[at] = rng.choice(list(b'{}[]",:-.eE0123456789 tfn'))
        return f"byte {at} -> {chr(replaced[at])}", bytes(replaced)
    if kind == 3:  # a byte of the header removed or inserted (the header length kept or fixed)
        at = 8 + int(rng.integers(length))
        blob = data[8:8 + length]
        blob = blob[:at - 8] + blob[at - 7:] if rng.integers(2) else blob[:at - 8] + b"1" + blob[at - 8:]
        return f"byte removed/inserted at {at}", join(blob, body, pad=bool(rng.integers(2)))
    name = names[int(rng.integers(len(names)))]
    if kind == 4:  # one field of one entry set to a hostile value
        field = ["dtype", "shape", "data_offsets"][int(rng.integers(3))]
        value = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]
        header[name][field] = value
        return f"{name}.{field} = {value!r}", join(header, body)
    if kind == 5:  # one entry's offsets or shape moved by a little
        info = header[name]
        delta = int(rng.choice([-8, -4, -2, -1, 1, 2, 4, 8]))
        which = int(rng.integers(3))
        if which < 2:
            info["data_offsets"][which] += delta
        elif info["shape"]:
            info["shape"][0] = max(0, info["shape"][0] + delta)
        return f"{name} moved by {delta} ({which})", join(header, body)
    other = names[int(rng.integers(len(names)))]  # two entries' fields exchanged
    field = ["dtype", "shape", "data_offsets"][int(rng.integers(3))]
    header[name][field], header[other][field] = header[other][field], header[name][field]
    return f"{field} of {name} <-> {other}", join(header, body)


def read_all(path):
    reader = SafetensorsReader(path)
    return {name: reader[name] for name in reader}, reader.metadata()


def test_fuzz_reader(tmp_path, checkpoint, deadline):
    """Each mutated file either reads back exactly what safetensors itself reads from it (the original
    tensors, unless the mutation made another valid file) or raises WeightsError; nothing else."""
    path, arrays = checkpoint
    data = path.read_bytes()
    original = {name: np.asarray(a) for name, a in arrays.items()}
    rng = np.random.default_rng(12)
    mutated = tmp_path / "model.safetensors"
    outcomes = {"refused": 0, "read": 0}
    for _ in range(FUZZ_CASES):
        what, changed = mutations(data, rng)
        mutated.write_bytes(changed)
        try:
            tensors, metadata = read_all(mutated)
        except WeightsError as exc:
            assert str(exc).startswith(f"{mutated}: ") and "\n" not in str(exc), what
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        try:
            expected = reference_load(changed)
        except Exception:  # safetensors refuses it: then it must still be the original file's content
            expected = original
        assert tensors.keys() == expected.keys(), what
        for name, array in tensors.items():
            assert array.dtype == expected[name].dtype and array.shape == expected[name].shape, (what, name)
            assert array.tobytes() == expected[name].tobytes(), (what, name)
    assert outcomes["refused"] > FUZZ_CASES // 2 and outcomes["read"] > 0, outcomes  # the fuzz reaches both


# ---- stale temporaries ----

def test_stale_partial_files_are_removed(tmp_path, capsys):
    """A `.NAME.partial-PID` left by a killed process is removed by the next write (said on stderr);
    one of a live process stays."""
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    stale = tmp_path / f".w.safetensors.partial-{dead}"
    stale.write_bytes(b"half")
    live = tmp_path / f".w.safetensors.partial-{os.getppid()}"
    live.write_bytes(b"someone else's")
    save_arrays(tmp_path / "w.safetensors", {"a": np.ones(2, np.float32)})
    assert not stale.exists() and live.exists()
    assert capsys.readouterr().err.strip().splitlines() == [
        f"note: removed {stale}, left by process {dead}, which has ended"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(WeightsError):
        write_safetensors(tmp_path / "w.safetensors", [("a", np.float32, (2,))], lambda name: np.ones(3))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyError), atomic_path(tmp_path / "x") as tmp:
        tmp.write_text("half")
        raise KeyError
    assert list(tmp_path.iterdir()) == []
