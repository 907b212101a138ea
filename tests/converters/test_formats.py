"""Format details: pdparams as paddle.save writes them (protocols 2 and 4, big-array slices, Fortran
order), sharded and .bin transformers checkpoints, Keras' split h5 attributes, the JSON summary."""
from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

from backends.tensorfile import save_arrays
from backends.checkpoints import open_checkpoint
from backends.weights import transpose
from backends.checkpoints.formats import hf_tf

from .conftest import cli, convert, random_params, tiny_config, write_hf
from .oracles import paddle_load, torch_save
from .test_roundtrip import stored


@pytest.fixture
def big(tmp_path):
    """A Funnel checkpoint whose embedding (256 KB) is read from the pickle by offset, not inline."""
    return write_hf(tmp_path / "source", "funnel", "base", config=tiny_config("funnel", vocab_size=4096))


def test_pdparams_is_a_plain_numpy_pickle(tmp_path, big, run):
    assert convert("hf2paddle", big, tmp_path / "paddle") == 0
    with open(tmp_path / "paddle" / "model_state.pdparams", "rb") as f:
        assert f.read(2) == b"\x80\x04"  # protocol 4, as paddle.save
        f.seek(0)
        state = pickle.load(f)
    loaded = run("paddle", paddle_load, str(tmp_path / "paddle" / "model_state.pdparams"))
    assert {k: v.tobytes() for k, v in loaded.items()} == {k: v.tobytes() for k, v in state.items()}
    source = load_file(str(big / "model.safetensors"))
    assert set(state) == set(source)
    assert np.array_equal(state["embeddings.word_embeddings.weight"], source["embeddings.word_embeddings.weight"])
    assert np.array_equal(state["encoder.blocks.0.0.ffn.linear_1.weight"],
                          source["encoder.blocks.0.0.ffn.linear_1.weight"].T)
    assert convert("paddle2hf", tmp_path / "paddle", tmp_path / "back") == 0
    assert stored(tmp_path / "back" / "model.safetensors") == stored(big / "model.safetensors")


def test_protocol_2_slices_and_fortran_order(tmp_path, big):
    """What paddle.save(protocol=2) writes for a Layer: big arrays split into `@@.i` slices listed under
    UnpackBigParamInfor@@, the structured-name table, and arrays in either memory order."""
    assert convert("hf2paddle", big, tmp_path / "paddle") == 0
    paddle = tmp_path / "paddle"
    with open(paddle / "model_state.pdparams", "rb") as f:
        state = pickle.load(f)
    name = "embeddings.word_embeddings.weight"
    flat = state.pop(name).reshape(-1)
    state.update({f"{name}@@.0": flat[:40000], f"{name}@@.1": flat[40000:]})
    state["UnpackBigParamInfor@@"] = {name: {"OriginShape": [4096, 16], "slices": [f"{name}@@.0", f"{name}@@.1"]}}
    state["StructuredToParameterName@@"] = {key: f"param_{i}" for i, key in enumerate(state)}
    kernel = "encoder.blocks.0.0.ffn.linear_1.weight"
    state[kernel] = np.asfortranarray(state[kernel])
    (paddle / "model_state.pdparams").write_bytes(pickle.dumps(state, protocol=2))
    assert convert("paddle2hf", paddle, tmp_path / "back") == 0
    assert stored(tmp_path / "back" / "model.safetensors") == stored(big / "model.safetensors")


def test_legacy_model_config_only(tmp_path, big):
    assert convert("hf2paddle", big, tmp_path / "paddle") == 0
    legacy = json.loads((tmp_path / "paddle" / "model_config.json").read_text())
    assert legacy["init_class"] == "FunnelBaseModel" and "architectures" not in legacy
    (tmp_path / "paddle" / "config.json").unlink()
    legacy.pop("model_type")  # old files name the class only
    (tmp_path / "paddle" / "model_config.json").write_text(json.dumps(legacy))
    assert convert("paddle2hf", tmp_path / "paddle", tmp_path / "back") == 0
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["model_type"] == "funnel" and config["architectures"] == ["FunnelBaseModel"]


def test_sharded_safetensors(tmp_path, big):
    params = load_file(str(big / "model.safetensors"))
    names = sorted(params)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_arrays(big / shard, {k: params[k] for k in keys}, {"format": "pt"})
    (big / "model.safetensors").unlink()
    weight_map = {key: shard for shard, keys in shards.items() for key in keys}
    (big / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert convert("hf2tf", big, tmp_path / "tf") == 0
    assert convert("tf2hf", tmp_path / "tf", tmp_path / "back") == 0
    assert {k: v.tobytes() for k, v in load_file(str(tmp_path / "back" / "model.safetensors")).items()} == \
           {k: v.tobytes() for k, v in params.items()}


def test_pytorch_model_bin(tmp_path, run):
    source = write_hf(tmp_path / "source", "bert", "seqcls")
    params = load_file(str(source / "model.safetensors"))
    (source / "model.safetensors").unlink()
    run("torch", torch_save, str(source / "pytorch_model.bin"), params)
    result = cli("hf2paddle", source, tmp_path / "paddle")  # torch stays out of the test process
    assert result.returncode == 0, result.stderr
    checkpoint = open_checkpoint("paddle", tmp_path / "paddle")
    assert checkpoint.head == "seqcls"
    assert all(np.array_equal(checkpoint.load(name), params[name]) for name in params)
    checkpoint.close()


def test_long_h5_attributes_are_split_like_keras(tmp_path):
    """Keras splits an attribute over the 64 KB HDF5 header limit into `weight_names0`, `weight_names1`..."""
    config = tiny_config("funnel", block_sizes=[14, 14, 14])
    source = write_hf(tmp_path / "source", "funnel", "model", config=config)
    assert convert("hf2tf", source, tmp_path / "tf") == 0
    with h5py.File(tmp_path / "tf" / "tf_model.h5") as f:
        group = f["funnel"]
        assert "weight_names" not in group.attrs and "weight_names1" in group.attrs
        assert len(hf_tf._attribute(group, "weight_names")) == len(load_file(str(source / "model.safetensors")))
    assert convert("tf2hf", tmp_path / "tf", tmp_path / "back") == 0
    assert stored(tmp_path / "back" / "model.safetensors") == stored(source / "model.safetensors")


def test_h5_contiguous_datasets_are_read_by_offset_and_chunked_ones_by_h5py(tmp_path):
    """Our tf_model.h5 writes each tensor contiguous at the offset HDF5 allocated; an h5 written by another
    tool may hold chunked, compressed datasets, which are read through h5py: both convert back bit-exact."""
    source = write_hf(tmp_path / "source", "bert", "base", config=tiny_config("bert"))
    assert convert("hf2tf", source, tmp_path / "tf") == 0
    with h5py.File(tmp_path / "tf" / "tf_model.h5", "r+") as f:
        layer = f["bert"]
        names = []
        layer.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert all(layer[name].chunks is None and layer[name].id.get_offset() for name in names)
        for name in names[::2]:  # every other one rewritten chunked and gzip-compressed
            data = layer[name][()]
            del layer[name]
            layer.create_dataset(name, data=data, chunks=True, compression="gzip")
        assert layer[names[0]].compression == "gzip"
    assert convert("tf2hf", tmp_path / "tf", tmp_path / "back") == 0
    assert stored(tmp_path / "back" / "model.safetensors") == stored(source / "model.safetensors")


def test_json_summary_and_skipped_buffers(tmp_path):
    config = tiny_config("bert")
    params = {**random_params("bert", config, "base"), "embeddings.position_ids": np.arange(40)[None]}
    source = write_hf(tmp_path / "source", "bert", "base", config=config, params=params)
    summary = tmp_path / "summary.json"
    assert convert("hf2tf", source, tmp_path / "tf", "--dtype", "float16", "--json", summary) == 0
    report = json.loads(summary.read_text())
    assert report["family"] == "bert" and report["head"] == "base" and report["dtype"] == "float16"
    assert report["skipped"] == ["embeddings.position_ids"] and report["tokenizer_files"] == ["vocab.txt"]
    assert report["tensors"] == len(params) - 1 and report["bytes"] == 2 * sum(
        v.size for k, v in params.items() if k != "embeddings.position_ids")


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 513), (1000, 33), (33, 1000), (0, 5)])
def test_tiled_transpose_is_the_transpose(shape):
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    result = transpose(array)
    assert result.flags.c_contiguous and np.array_equal(result, array.T)


@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_prefetcher_gives_each_array_in_the_asked_order_and_reads_ahead_at_most_ahead(ahead):
    """The earlier names take longest to make, so the threads finish them last; each is made once, given in the
    order asked, and no more than `ahead` names beyond the one asked are ever being made or waiting."""
    import threading
    import time

    from converters.core import Prefetcher

    order, made, lock = [f"t{i}" for i in range(12)], [], threading.Lock()
    asked: list = []

    def make(name):
        with lock:
            made.append(name)
            assert order.index(name) <= order.index(asked[-1]) + ahead, (name, asked[-1])
        time.sleep(0.02 * (12 - order.index(name)) / 12)
        return name.upper()

    with Prefetcher(order, make, ahead) as prefetched:
        got = []
        for name in order:
            asked.append(name)
            got.append(prefetched(name))
    assert got == [name.upper() for name in order] and sorted(made) == sorted(order)


def test_pdparams_writer_keeps_each_array_shape_dtype_and_order(tmp_path, run):
    """0-d arrays stay 0-d (np.ascontiguousarray would make them shape (1,)), Fortran-ordered ones keep their values;
    paddle.load and our reader see what was written."""
    from backends.checkpoints.formats import paddlenlp

    arrays = {"scalar": np.array(3.5, dtype=np.float32), "count": np.array(7, dtype=np.int64),
              "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
              "vector": np.arange(5, dtype=np.float16)}
    path = tmp_path / "model_state.pdparams"
    paddlenlp.write_shard(path, [(name, a.shape, a.dtype) for name, a in arrays.items()], arrays.__getitem__)
    state, close = paddlenlp.read_state_file(path)
    try:
        ours = {name: ref.load() for name, ref in state.items()}
    finally:
        close()
    loaded = run("paddle", paddle_load, str(path))
    for name, array in arrays.items():
        for read in (ours[name], loaded[name]):
            assert read.shape == array.shape and read.dtype == array.dtype and np.array_equal(read, array), name
