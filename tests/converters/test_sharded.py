"""Sharded checkpoints: transformers' sharded safetensors and TF h5, PaddleNLP's sharded .pdparams, each with its
index. Folders the libraries' own save_pretrained(max_shard_size=...) wrote are read (converters, parity, tasks);
what `--max-shard-size` writes is loaded by the libraries' from_pretrained; a broken index or shard set is one
line naming the file and key, exit 2, nothing written."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backends.checkpoints import detect_format, open_checkpoint
from backends.checkpoints.formats import get as get_format, sharding
from backends.checkpoints.rules import format_rules
from backends.errors import BadInput

from .conftest import convert, real_text_inputs, tiny_config, unpadded, write_hf
from .oracles import scaled_diff, save_paddlenlp, save_transformers_tf, save_transformers_torch
from .test_errors import one_line_error, only
from . import test_hostile
from .test_hostile import commands, errors, run_main
from .test_layouts import library_outputs, reported_keys, stored_bytes

WEIGHTS = {"hf": "model.safetensors", "paddle": "model_state.pdparams", "tf": "tf_model.h5"}
COMMANDS = {("hf", "paddle"): "hf2paddle", ("hf", "tf"): "hf2tf", ("tf", "hf"): "tf2hf", ("tf", "paddle"): "tf2paddle",
            ("paddle", "hf"): "paddle2hf", ("paddle", "tf"): "paddle2tf"}
quiet_transformers = test_hostile.quiet_transformers  # the fixture
SHARD = "3KB"  # tiny BERT: 27 kB in ~10 shards; its 4 kB word embeddings exceed it and get a shard of their own


def index_of(folder, fmt: str) -> dict:
    return json.loads((folder / sharding.index_name(WEIGHTS[fmt])).read_text())


def shard_files(folder, fmt: str) -> list:
    return sorted(set(index_of(folder, fmt)["weight_map"].values()))


# ---- the option ----

@pytest.mark.parametrize("value,expected", [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("3KB", 3000), ("1GiB", 2**30),
                                            ("2MiB", 2 * 2**20), ("10kib", 10240), ("8Gb", 10**9), ("12345", 12345),
                                            (4096, 4096), (" 5GB ", 5 * 10**9), ("5gb", 10**9 * 5 // 8)])
def test_max_shard_size_reads_as_save_pretrained(value, expected):
    """transformers' and PaddleNLP's convert_file_size_to_int: KB/MB/GB powers of 10, KiB/MiB/GiB of 2, a lowercase
    final b in KB/MB/GB counts bits."""
    assert sharding.parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "GB", "1.5GB", "-1", "0", "5TB", "5 G", "five"])
def test_bad_max_shard_size(tmp_path, capsys, value):
    source = write_hf(tmp_path / "source", "bert", "base")
    assert convert("hf2paddle", source, tmp_path / "out", "--max-shard-size", value) == 2
    assert one_line_error(capsys).startswith(f"error: --max-shard-size {value!r}: ")
    assert only(tmp_path) == ["source"]


def test_shards_are_planned_in_order_and_a_large_tensor_is_alone():
    specs = [(name, np.float32, (n,)) for name, n in (("a", 1), ("b", 1), ("big", 3), ("c", 1), ("d", 1), ("e", 2))]
    assert [[s[0] for s in shard] for shard in sharding.plan(specs, 8)] == [["a", "b"], ["big"], ["c", "d"], ["e"]]
    assert len(sharding.plan(specs, None)) == 1 and len(sharding.plan(specs, 36)) == 1
    assert sharding.shard_name("model_state.pdparams", 2, 13) == "model_state-00002-of-00013.pdparams"


@pytest.mark.parametrize("fmt", ["hf", "paddle", "tf"])
def test_our_shards_round_trip_bit_for_bit(tmp_path, fmt):
    """Every format written sharded: the index lists every tensor once with the total size, no shard exceeds the
    limit unless it holds one tensor, and converting back unsharded restores the source's bytes."""
    source = write_hf(tmp_path / "source", "bert", "pretraining", config=tiny_config("bert", "pretraining"))
    target = tmp_path / fmt
    if fmt == "hf":  # hf -> paddle (one file) -> hf (sharded)
        assert convert("hf2paddle", source, tmp_path / "via") == 0
        assert convert("paddle2hf", tmp_path / "via", target, "--max-shard-size", SHARD) == 0
    else:
        assert convert(COMMANDS["hf", fmt], source, target, "--max-shard-size", SHARD) == 0
    assert not (target / WEIGHTS[fmt]).exists() and detect_format(target) == fmt
    index = index_of(target, fmt)
    files = shard_files(target, fmt)
    assert len(files) >= 5 and files[0] == sharding.shard_name(WEIGHTS[fmt], 1, len(files))
    stored = get_format(fmt).read(target)
    try:
        sizes = {name: int(np.prod(ref.shape)) * ref.dtype.itemsize for name, ref in stored.tensors.items()}
    finally:
        stored.close()
    assert index["metadata"]["total_size"] == sum(sizes.values())
    per_file = {file: [key for key, f in index["weight_map"].items() if f == file] for file in files}
    unscoped = (lambda key: key.split("/", 1)[1]) if fmt == "tf" else (lambda key: key)
    assert all(len(keys) == 1 or sum(sizes[unscoped(k)] for k in keys) <= 3000 for keys in per_file.values())
    assert any(len(keys) == 1 and sizes[unscoped(keys[0])] > 3000 for keys in per_file.values())
    back = tmp_path / "back"
    assert convert(COMMANDS[fmt, "paddle" if fmt == "hf" else "hf"], target, back) == 0
    assert stored_bytes("paddle" if fmt == "hf" else "hf", back) == \
        stored_bytes("paddle" if fmt == "hf" else "hf", tmp_path / "via" if fmt == "hf" else source)


# ---- the libraries' own sharded folders, and theirs loading ours ----

SAVERS = {"hf": save_transformers_torch, "tf": save_transformers_tf, "paddle": save_paddlenlp}
WORKER = {"hf": "torch", "tf": "tf", "paddle": "paddle"}


@pytest.fixture(scope="module")
def library_shards(tmp_path_factory, workers):
    """fmt -> a tiny BERT pre-training checkpoint its library's save_pretrained(max_shard_size=SHARD) wrote."""
    config = tiny_config("bert", "pretraining")
    saved = {}
    for fmt, save in SAVERS.items():
        path = tmp_path_factory.mktemp(f"{fmt}-sharded") / "source"
        class_name = format_rules("bert", fmt).classes["pretraining"]
        workers[WORKER[fmt]].submit(save, str(path), class_name, config.to_dict(), 0, SHARD).result()
        assert not (path / WEIGHTS[fmt]).exists() and len(shard_files(path, fmt)) >= 3, fmt
        saved[fmt] = path
    return saved


CYCLE = [("hf", "paddle"), ("paddle", "tf"), ("tf", "hf")]  # each library's shards read, each library loads ours


@pytest.mark.oracle
@pytest.mark.parametrize("src,dst", CYCLE, ids=[f"{s}-to-{d}" for s, d in CYCLE])
def test_library_shards_convert_to_shards_the_library_loads(tmp_path, library_shards, run, src, dst):
    source, target = library_shards[src], tmp_path / dst
    assert convert(COMMANDS[src, dst], source, target, "--no-tokenizer", "--max-shard-size", SHARD) == 0
    assert len(shard_files(target, dst)) >= 3 and not (target / WEIGHTS[dst]).exists()
    config = tiny_config("bert", "pretraining")
    inputs = real_text_inputs(config)
    reference, source_info = library_outputs(run, src, "bert", "pretraining", source, inputs)
    got, info = library_outputs(run, dst, "bert", "pretraining", target, inputs)
    assert reported_keys(source_info) == [] and reported_keys(info) == [], (source_info, info)
    assert scaled_diff(unpadded(reference, inputs), unpadded(got, inputs)) <= 1e-5
    back = tmp_path / "back"
    assert convert(COMMANDS[dst, src], target, back, "--no-tokenizer") == 0  # one file: the default limit
    assert (back / WEIGHTS[src]).is_file() and stored_bytes(src, back) == stored_bytes(src, source)


@pytest.mark.oracle
def test_parity_and_tasks_read_library_shards(library_shards):
    """`parity compare DIR` (float64; `--against` reads the weights the same way) and `tasks --model DIR` on each
    library's sharded folder."""
    from parity.harness import resolve_target, run_parity_many
    from tasks.train.model import load_model

    targets = [resolve_target(str(library_shards[fmt])) for fmt in SAVERS]
    assert [t.head for t in targets] == ["pretraining"] * 3
    for report, fmt in zip(run_parity_many(targets, ["torch", "tf"], dtypes=("float64",), seq_len=8),
                           SAVERS):
        assert report.passed, fmt
    for fmt, folder in library_shards.items():
        model = load_model(str(folder), "seqcls", num_labels=2)
        assert sorted(model.fresh) == ["classifier.bias", "classifier.weight"], (fmt, model.fresh)
        checkpoint = open_checkpoint(fmt, folder)
        try:
            assert all(np.array_equal(model.params[name], checkpoint.load(name)) for name in checkpoint.holds("seqcls"))
        finally:
            checkpoint.close()


# ---- broken shard sets: one line naming the file and key, exit 2, nothing written ----

@pytest.fixture(params=["hf", "paddle", "tf"])
def sharded(request, tmp_path):
    """(format, folder) of a tiny BERT written sharded by our converter (transformers' format by way of PaddleNLP's)."""
    fmt = request.param
    source, folder = write_hf(tmp_path / "source", "bert", "base"), tmp_path / "sharded"
    if fmt == "hf":
        assert convert("hf2paddle", source, tmp_path / "via") == 0
        assert convert("paddle2hf", tmp_path / "via", folder, "--max-shard-size", SHARD) == 0
        shutil.rmtree(tmp_path / "via")
    else:
        assert convert(COMMANDS["hf", fmt], source, folder, "--max-shard-size", SHARD) == 0
    shutil.rmtree(source)
    return fmt, folder


def command_from(fmt: str) -> str:
    return COMMANDS[fmt, "tf" if fmt == "paddle" else "paddle"]


def refused(tmp_path, capsys, fmt, folder) -> str:
    """Convert the broken folder: exit 2, nothing written; the one error line."""
    before = only(tmp_path)
    assert convert(command_from(fmt), folder, tmp_path / "out") == 2
    assert only(tmp_path) == before
    return one_line_error(capsys)


def rewrite_shard(fmt: str, folder, file: str, names: list, source) -> None:
    """Shard `file` rewritten with the tensors `names`, their values read from the open checkpoint `source`."""
    specs = [(name, source.tensors[name].dtype, source.tensors[name].shape) for name in names]
    arrays = {name: source.tensors[name].load() for name in names}
    (folder / file).unlink()
    get_format(fmt).write_shard(folder / file, specs, arrays.__getitem__)


def test_missing_shard(tmp_path, capsys, sharded):
    fmt, folder = sharded
    index = index_of(folder, fmt)
    file = shard_files(folder, fmt)[1]
    (folder / file).unlink()
    first_key = next(key for key, f in index["weight_map"].items() if f == file)
    assert refused(tmp_path, capsys, fmt, folder) == \
        f"error: {folder / file}: no such file (named in {sharding.index_name(WEIGHTS[fmt])} for {first_key})"


def test_tensor_in_two_shards(tmp_path, capsys, sharded):
    fmt, folder = sharded
    files = shard_files(folder, fmt)
    source = get_format(fmt).read(folder)
    try:
        index = index_of(folder, fmt)
        unscoped = (lambda key: key.split("/", 1)[1]) if fmt == "tf" else (lambda key: key)
        in_file = {file: [unscoped(k) for k, f in index["weight_map"].items() if f == file] for file in files}
        moved = in_file[files[0]][0]
        rewrite_shard(fmt, folder, files[1], in_file[files[1]] + [moved], source)
    finally:
        source.close()
    assert refused(tmp_path, capsys, fmt, folder) == (
        f"error: {folder / files[1]}: holds {moved}, which {sharding.index_name(WEIGHTS[fmt])} places in {files[0]} "
        "too (a tensor in two shards)")


def test_index_names_a_tensor_its_shard_lacks(tmp_path, capsys, sharded):
    fmt, folder = sharded
    index_file = folder / sharding.index_name(WEIGHTS[fmt])
    index = index_of(folder, fmt)
    key, file = next(iter(index["weight_map"].items()))
    index["weight_map"][key + "_extra"] = file
    index_file.write_text(json.dumps(index))
    stored = key.split("/", 1)[1] if fmt == "tf" else key
    assert refused(tmp_path, capsys, fmt, folder) == \
        f"error: {folder / file}: lacks {stored}_extra, listed in {index_file.name}"


def test_shard_holds_a_tensor_the_index_does_not_list(tmp_path, capsys, sharded):
    fmt, folder = sharded
    index_file = folder / sharding.index_name(WEIGHTS[fmt])
    index = index_of(folder, fmt)
    key, file = next(iter(index["weight_map"].items()))
    del index["weight_map"][key]
    index_file.write_text(json.dumps(index))
    stored = key.split("/", 1)[1] if fmt == "tf" else key
    assert refused(tmp_path, capsys, fmt, folder) == \
        f"error: {folder / file}: holds {stored}, which {index_file.name} does not list"


MALFORMED = {  # index text (from the valid one) -> what the error says after "<index>: "
    "not-json": (lambda text: text[:-5], "not valid JSON ("),
    "a-list": (lambda text: "[]", "expected a JSON object"),
    "no-weight-map": (lambda text: json.dumps({"metadata": {}}), "weight_map: missing"),
    "weight-map-list": (lambda text: json.dumps({"metadata": {}, "weight_map": []}), "weight_map: not an object"),
    "empty-weight-map": (lambda text: json.dumps({"metadata": {}, "weight_map": {}}), "weight_map: empty"),
    "no-metadata": (lambda text: json.dumps({"weight_map": json.loads(text)["weight_map"]}), "metadata: missing"),
    "bad-total-size": (lambda text: json.dumps({**json.loads(text), "metadata": {"total_size": "27kB"}}),
                       "metadata.total_size is '27kB', not a number of bytes"),
    "repeated-key": (lambda text: text.replace('"weight_map": {', '"weight_map": {"x": "a", "x": "b", ', 1),
                     "not valid JSON (key 'x' appears twice)"),
    "shard-not-a-name": (lambda text: text.replace('"weight_map": {', '"weight_map": {"x": 5, ', 1),
                         "weight_map names 5 for x: not a file name in"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_index(tmp_path, capsys, sharded, case):
    fmt, folder = sharded
    index_file = folder / sharding.index_name(WEIGHTS[fmt])
    mutate, said = MALFORMED[case]
    index_file.write_text(mutate(index_file.read_text()))
    assert refused(tmp_path, capsys, fmt, folder).startswith(f"error: {index_file}: {said}")


def test_open_checkpoint_reports_the_same(sharded):
    """parity and tasks open folders through detect_format/open_checkpoint: the same error (BadInput)."""
    fmt, folder = sharded
    (folder / shard_files(folder, fmt)[0]).unlink()
    with pytest.raises(BadInput, match="no such file"):
        open_checkpoint(detect_format(folder), folder)


def test_interrupted_sharded_write_leaves_nothing(tmp_path, monkeypatch):
    """A failure while the third shard is written: no DST, no temporary folder, no shard left behind."""
    source = write_hf(tmp_path / "source", "bert", "base")
    written = []
    original = sharding.shard_name

    def fail_third(weights, number, count):
        written.append(number)
        if number == 3:
            raise KeyboardInterrupt
        return original(weights, number, count)

    monkeypatch.setattr(sharding, "shard_name", fail_third)
    assert convert("hf2tf", source, tmp_path / "out", "--max-shard-size", SHARD) == 130
    assert written == [1, 2, 3] and only(tmp_path) == ["source"]


def test_broken_shard_set_through_every_command(tmp_path, capsys, quiet_transformers):
    """The converters, `parity compare DIR` and `tasks finetune --model DIR`: the same one line, exit 2, nothing
    written."""
    source = write_hf(tmp_path / "source", "bert", "base")
    folder = tmp_path / "sharded"
    assert convert("hf2paddle", source, tmp_path / "via") == 0
    assert convert("paddle2hf", tmp_path / "via", folder, "--max-shard-size", SHARD) == 0
    file = shard_files(folder, "hf")[-1]
    (folder / file).unlink()
    runs = commands(folder, tmp_path / "out", tmp_path / "data")
    before = only(tmp_path)
    for name, (module, argv) in runs.items():
        capsys.readouterr()
        assert run_main(module, argv) == 2, name
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(errors(err)) == 1, (name, err)
        assert f"error: {folder / file}: no such file (named in model.safetensors.index.json for " in errors(err)[0], \
            (name, err)
        assert only(tmp_path) == before, name
