"""Hostile and broken inputs through the command lines: each case is one line naming the file (and entry),
exit code 2, nothing written, nothing read from outside the given files.

Malformed safetensors go through the three commands that read a checkpoint folder (the converters,
`python -m parity compare DIR`, `python -m tasks finetune --model DIR`); h5 files that reach outside
themselves, sharded indexes naming other folders, and path arguments that would destroy the source
through the converters."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import pytest

from backends.tensorfile import SafetensorsReader

from ..backends.test_tensorfile_hostile import MALFORMED, first_tensor, malformed, second_tensor, split
from ..conftest import REPO
from .conftest import convert, write_hf
from .test_errors import Evil, only, one_line_error

WEIGHTS = "model.safetensors"


@pytest.fixture
def source(tmp_path):
    return write_hf(tmp_path / "source", "funnel", "model")


# ---- malformed safetensors through the three commands ----

def sst2(directory) -> str:
    """A two-example SST-2 training file."""
    directory.mkdir(exist_ok=True)
    (directory / "train.tsv").write_text("sentence\tlabel\na fine film\t1\na dull film\t0\n")
    return str(directory / "train.tsv")


def commands(model, out, data) -> dict:
    """name -> (module, argv) of the commands that read checkpoint folder `model`."""
    return {
        "converters": ("converters", ["hf2paddle", str(model), str(out)]),
        "parity": ("parity", ["compare", str(model), "--backends", "torch", "--seq-len", "8"]),
        "tasks": ("tasks", ["finetune", "--task", "sst2", "--train-file", sst2(data), "--model", str(model),
                            "--backend", "torch", "--output-dir", str(out), "--do-train", "--max-steps", "1"]),
    }


def run_main(module: str, argv: list) -> int:
    return __import__(f"{module}.__main__", fromlist=["main"]).main(argv)


def errors(stderr: str) -> list:
    """The error lines (frameworks and transformers log other lines on stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ") or ": error: " in line]


def broken(tmp_path, source, case: str):
    """A copy of `source` whose safetensors header is malformed as `case` says; the entry it names."""
    data = (source / WEIGHTS).read_bytes()
    (source / WEIGHTS).write_bytes(malformed(case, data))
    header, _ = split(data)
    if case == "list-header":
        return None
    return first_tensor(header) if case.endswith("offsets") or case.endswith("shape") else second_tensor(header)


@pytest.fixture
def quiet_transformers():
    """transformers logs to the stderr it first saw (a closed capture, in-process): errors only, as the
    tasks command line sets."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    yield
    logging.set_verbosity(level)


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_safetensors_through_every_command(tmp_path, source, capsys, quiet_transformers, case):
    entry = broken(tmp_path, source, case)
    runs = commands(source, tmp_path / "out", tmp_path / "data")
    before = only(tmp_path)
    for name, (module, argv) in runs.items():
        capsys.readouterr()
        assert run_main(module, argv) == 2, name
        err = capsys.readouterr().err
        lines = errors(err)
        assert "Traceback" not in err and len(lines) == 1 and f"{source / WEIGHTS}: " in lines[0] and MALFORMED[case][1] in lines[0], (name, lines)
        assert entry is None or entry in lines[0], (name, lines)
        assert only(tmp_path) == before, name


@pytest.mark.parametrize("command", ["converters", "parity"])
def test_malformed_safetensors_command_line(tmp_path, source, command):
    """The real entry points: one line on stderr, no traceback, exit 2 (tasks' takes 15 s to start: in-process
    above only)."""
    entry = broken(tmp_path, source, "overlapping")
    module, argv = commands(source, tmp_path / "out", tmp_path / "data")[command]
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    lines = errors(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{source / WEIGHTS}: {entry} starts at data byte" in lines[0]
    assert not (tmp_path / "out").exists()


# ---- sharded indexes name files beside them only ----

@pytest.mark.parametrize("shard", ["../outside.safetensors", "/tmp/../{outside}", "sub/model.safetensors", "..", ""])
def test_sharded_index_names_files_beside_it_only(tmp_path, source, capsys, shard):
    outside = tmp_path / "outside.safetensors"
    (source / WEIGHTS).rename(outside)
    (source / "sub").mkdir()
    (source / "sub" / WEIGHTS).write_bytes(outside.read_bytes())
    shard = shard.format(outside=outside)
    names = list(SafetensorsReader(outside))
    (source / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {name: (shard if i == 3 else WEIGHTS) for i, name in enumerate(names)}}))
    assert convert("hf2paddle", source, tmp_path / "out") == 2
    assert one_line_error(capsys) == (f"error: {source / 'model.safetensors.index.json'}: weight_map names {shard!r} "
                                      f"for {names[3]}: not a file name in {source}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("file", ["config.json", "model.safetensors.index.json"])
def test_deeply_nested_json(tmp_path, source, capsys, file):
    (source / file).write_text("[" * 100000 + "]" * 100000)
    if file.endswith("index.json"):
        (source / WEIGHTS).unlink()  # the index is read when there is no single weights file
    assert convert("hf2paddle", source, tmp_path / "out") == 2
    assert one_line_error(capsys) == f"error: {source / file}: not valid JSON (nested too deeply)"


def test_pytorch_model_bin_runs_no_code(tmp_path, source, capsys):
    """pytorch_model.bin is loaded with torch.load(weights_only=True): a pickled call is refused, never run."""
    import torch

    marker = tmp_path / "pwned"
    (source / WEIGHTS).unlink()
    torch.save({"embeddings.word_embeddings.weight": Evil(marker)}, source / "pytorch_model.bin")
    assert convert("hf2paddle", source, tmp_path / "out") == 2
    assert one_line_error(capsys).startswith(f"error: {source / 'pytorch_model.bin'}: cannot load (")
    assert only(tmp_path) == ["source"]


# ---- h5 files that reach outside themselves ----

def first_weight(h5) -> str:
    """The path in the file of the first weight Keras lists."""
    layer = h5.attrs["layer_names"][0]
    layer = layer.decode() if isinstance(layer, bytes) else str(layer)
    weight = h5[layer].attrs["weight_names"][0]
    return f"/{layer}/{weight.decode() if isinstance(weight, bytes) else weight}"


def external_storage(h5, name, data, tmp_path):
    """The dataset's bytes kept in a file beside it: reading them would copy that file into the output."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(data.tobytes())
    del h5[name]
    h5.create_dataset(name, data.shape, data.dtype, external=[(str(secret), 0, data.nbytes)])
    return "keeps its data in external file"


def external_link(h5, name, data, tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["w"] = data
    del h5[name]
    h5[name] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/w")
    return "is an external link to another file"


def soft_link(h5, name, data, tmp_path):
    h5["/copy"] = data
    del h5[name]
    h5[name] = h5py.SoftLink("/copy")
    return "is a soft link"


def virtual_dataset(h5, name, data, tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["w"] = data
    layout = h5py.VirtualLayout(data.shape, data.dtype)
    layout[...] = h5py.VirtualSource(str(tmp_path / "other.h5"), "w", data.shape)
    del h5[name]
    h5.create_virtual_dataset(name, layout)
    return "is a virtual dataset"


def plugin_filter(h5, name, data, tmp_path):
    del h5[name]
    h5.create_dataset(name, data=data, compression="lzf")  # h5py's own filter, not one of HDF5's
    return "uses filter 32000 (lzf)"


def strings(h5, name, data, tmp_path):
    del h5[name]
    h5.create_dataset(name, data.shape, h5py.string_dtype())
    return "not numbers"


def group_link(h5, name, data, tmp_path):
    """A folder on the way to the weight is an external link."""
    layer = name.split("/")[1]
    with h5py.File(tmp_path / "other.h5", "w") as other:
        h5.copy(h5[layer], other, name=layer)
    del h5[layer]
    h5[layer] = h5py.ExternalLink(str(tmp_path / "other.h5"), f"/{layer}")
    return "is an external link to another file"


def two_weights_one_name(h5, name, data, tmp_path):
    """Another layer lists a different dataset under the same weight name (a tied weight is one dataset)."""
    layer, weight = name.split("/", 2)[1:]
    h5.create_group("twin").create_dataset(weight, data=data + 1)
    h5["twin"].attrs["weight_names"] = [weight.encode()]
    h5.attrs["layer_names"] = [*(n if isinstance(n, bytes) else n.encode() for n in h5.attrs["layer_names"]), b"twin"]
    return "two different weights are named"


@pytest.mark.parametrize("change", [external_storage, external_link, soft_link, virtual_dataset, plugin_filter,
                                    strings, group_link, two_weights_one_name], ids=lambda f: f.__name__)
def test_h5_reading_outside_the_file_is_refused(tmp_path, source, capsys, change):
    tf = tmp_path / "tf"
    assert convert("hf2tf", source, tf) == 0
    with h5py.File(tf / "tf_model.h5", "r+") as h5:
        name = first_weight(h5)
        says = change(h5, name, h5[name][()], tmp_path)
    before = only(tmp_path)
    capsys.readouterr()
    assert convert("tf2hf", tf, tmp_path / "out") == 2
    error = one_line_error(capsys)
    assert error.startswith(f"error: {tf / 'tf_model.h5'}: ") and says in error, error
    where = {group_link: "/" + name.split("/")[1], two_weights_one_name: name.split("/", 3)[3]}.get(change, name)
    assert where in error
    assert only(tmp_path) == before


# ---- path arguments checked before any work ----

def test_converting_onto_the_source_is_refused(tmp_path, source, capsys):
    link = tmp_path / "link"
    link.symlink_to(source)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    for dst, says in [(source, "is the source folder"), (link, "is the source folder"),
                      (source / "sub", "is inside the source folder"), (link / "sub", "is inside the source folder"),
                      (tmp_path, "holds the source folder")]:
        assert convert("hf2paddle", source, dst, "--force") == 2
        assert one_line_error(capsys).startswith(f"error: {dst}: {says}")
    assert {p.name: p.read_bytes() for p in source.iterdir()} == files
    assert only(tmp_path) == ["link", "source"]


def test_json_path_checked_before_converting(tmp_path, source, capsys):
    (tmp_path / "file").write_text("")
    for path, says in [(tmp_path, "is a directory"), (tmp_path / "nowhere" / "s.json", "no such folder"),
                       (tmp_path / "file" / "s.json", "no such folder"), (source / "config.json", "is inside the source")]:
        assert convert("hf2paddle", source, tmp_path / "out", "--json", path) == 2
        assert one_line_error(capsys).startswith(f"error: --json {path}: {says}")
    assert only(tmp_path) == ["file", "source"]
    assert convert("hf2paddle", source, tmp_path / "out", "--json", tmp_path / "s.json") == 0
    assert json.loads((tmp_path / "s.json").read_text())["tensors"] > 0


def test_destination_folder_must_be_creatable(tmp_path, source, capsys):
    (tmp_path / "file").write_text("")
    assert convert("hf2paddle", source, tmp_path / "file" / "out") == 2
    assert one_line_error(capsys) == f"error: destination {tmp_path / 'file' / 'out'}: {tmp_path / 'file'} is not a folder"
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "locked").mkdir(mode=0o500)
        assert convert("hf2paddle", source, tmp_path / "locked" / "out") == 2
        assert "cannot write in" in one_line_error(capsys)


# ---- interrupted and killed conversions ----

def test_stale_partial_output_of_a_killed_run_is_removed(tmp_path, source, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}"
    (stale / "half").mkdir(parents=True)
    assert convert("hf2paddle", source, tmp_path / "out") == 0
    assert capsys.readouterr().err.strip().splitlines() == [
        f"note: removed {stale}, left by process {dead.pid}, which has ended"]
    assert only(tmp_path) == ["out", "source"]


@pytest.mark.parametrize("exchange", [True, False], ids=["one-step", "two-renames"])
def test_force_replaces_a_folder_a_file_or_a_link(tmp_path, source, monkeypatch, exchange):
    """--force swaps DST in one step where the system can (else two renames); a link is replaced, never
    followed; nothing else is left."""
    if not exchange:
        monkeypatch.setattr("converters.core._exchange", lambda new, old: False)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "old.txt").write_text("old")
    (tmp_path / "file").write_text("old")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "kept.txt").write_text("kept")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for dst in ("folder", "file", "link"):
        assert convert("hf2paddle", source, tmp_path / dst, "--force") == 0
        assert not (tmp_path / dst).is_symlink() and "model_state.pdparams" in only(tmp_path / dst)
    assert only(tmp_path / "folder") == ["config.json", "model_config.json", "model_state.pdparams", "vocab.txt"]
    assert only(tmp_path / "target") == ["kept.txt"]
    assert only(tmp_path) == ["file", "folder", "link", "source", "target"]


def test_ctrl_c_while_starting_up(tmp_path, source):
    """Ctrl-C while numpy and the formats load (the first half second): no traceback, nothing written."""
    process = subprocess.Popen([sys.executable, "-m", "converters", "hf2paddle", source, tmp_path / "out"], cwd=REPO,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    maps = f"/proc/{process.pid}/maps"
    while process.poll() is None and time.monotonic() < deadline:  # numpy's core library is being loaded
        try:
            with open(maps) as mapped:
                if "_multiarray_umath" in mapped.read():
                    break
        except OSError:
            pass
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip().splitlines() == ["interrupted: nothing written"], err
    assert only(tmp_path) == ["source"]


def test_early_interrupt_exit_cannot_be_caught():
    """The early handler ends the process itself: a signal landing inside an extension's import (numpy's C core
    importing datetime) passes any exception raised there through C code that turns it into an ImportError, so an
    exit by exception (sys.exit) would end in a traceback. Modelled by code that catches every exception."""
    program = ("import signal, sys\nfrom converters.__main__ import _exit_early\n"
               "try:\n    _exit_early(signal.SIGINT, None)\nexcept BaseException:\n    sys.exit('caught')\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and done.stderr.strip().splitlines() == ["interrupted: nothing written"], done.stderr
