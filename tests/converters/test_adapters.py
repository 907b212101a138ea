"""Adapter-only folders move between frameworks like models: the same JSON files, the adapter and head weights
named and laid out as the target's port loads them, and back again bit for bit."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backends import family
from backends.checkpoints.adapters import FILES, read_adapter_folder, write_adapter_folder

from ..conftest import BACKENDS
from .conftest import convert, tiny_config

CHAIN = ["hf2paddle", "paddle2tf", "tf2hf"]


def write_adapter(folder, family_name="bert", head="seqcls", adapter="seq_bn[reduction_factor=4]", name="task"):
    """An hf-form adapter folder of seeded random adapter and head weights (not the init: LoRA's B would be 0)."""
    config = tiny_config(family_name).replace(adapter=adapter)
    shapes = family(family_name).param_shapes(config, head)
    rng = np.random.default_rng(3)
    params = {key: rng.normal(size=shape).astype(np.float32) for key, shape in shapes.items()}
    write_adapter_folder(folder, "hf", family_name, config, head, name, params)
    return folder


@pytest.mark.parametrize("family_name,head,adapter", [
    ("bert", "seqcls", "seq_bn[reduction_factor=4]"), ("bert", "qa", "lora[r=2,intermediate_lora=True]"),
    ("funnel", "seqcls", "double_seq_bn"),
])
def test_adapter_folder_round_trips_through_every_framework(tmp_path, family_name, head, adapter):
    source = write_adapter(tmp_path / "source", family_name, head, adapter)
    original = read_adapter_folder(source)
    current = source
    for index, command in enumerate(CHAIN):
        target = tmp_path / f"{index}-{command}"
        assert convert(command, current, target) == 0
        fmt = command.partition("2")[2]
        assert {p.name for p in target.iterdir()} == {"adapter_config.json", "head_config.json", *FILES[fmt]}
        moved = read_adapter_folder(target)
        assert moved.fmt == fmt and moved.name == "task" and moved.adapter == adapter and moved.head == head
        assert moved.params.keys() == original.params.keys()
        assert all(moved.params[k].tobytes() == original.params[k].tobytes() for k in original.params)
        current = target
    for file in ("adapter.safetensors", "model_head.safetensors", "head_config.json"):
        assert (current / file).read_bytes() == (source / file).read_bytes(), file


@pytest.mark.skipif("paddle" not in BACKENDS, reason="needs paddle")
@pytest.mark.filterwarnings("ignore:Skip loading for")  # the base model's keys: the file holds the adapter and head
def test_paddle_form_is_what_the_paddle_port_loads(tmp_path):
    """adapter.pdparams holds the paddle port's own names and [in, out] kernels: paddle.load + set_state_dict."""
    import paddle

    from backends.build import build_model, export_params

    source = write_adapter(tmp_path / "source")
    assert convert("hf2paddle", source, tmp_path / "paddle") == 0
    stored = read_adapter_folder(source)
    model = build_model("bert", "paddle", stored.config, "seqcls", dtype="float32")
    state = {**paddle.load(str(tmp_path / "paddle" / "adapter.pdparams")),
             **paddle.load(str(tmp_path / "paddle" / "model_head.pdparams"))}
    missing, unexpected = model.set_state_dict(state)
    assert not unexpected and all(key not in state for key in missing)
    loaded = export_params(model, "bert", "paddle")
    for key, array in stored.params.items():
        np.testing.assert_array_equal(loaded[key], array)
    kernel = next(key for key in state if key.endswith("adapter_down.0.weight"))
    assert list(state[kernel].shape) == list(reversed(stored.params[kernel].shape))  # [in, out]


def test_adapter_folder_cast_and_json_summary(tmp_path):
    source = write_adapter(tmp_path / "source")
    summary = tmp_path / "summary.json"
    assert convert("hf2tf", source, tmp_path / "tf", "--dtype", "float16", "--json", summary) == 0
    report = json.loads(summary.read_text())
    assert report["adapter"] == "seq_bn[reduction_factor=4]" and report["head"] == "seqcls"
    moved = read_adapter_folder(tmp_path / "tf")
    assert {array.dtype for array in moved.params.values()} == {np.dtype(np.float16)}


@pytest.mark.parametrize("case,expected", [
    ("wrong form", "an adapter folder in hf form, not paddle: use hf2tf"),
    ("tf1", "tf1bert2hf does not move those"),
    ("verify", "no base model to run"),
    ("other family", "an adapter for a bert model, not --family funnel"),
    ("missing tensor", "lacks bert.encoder.layer.1.output.adapters.task.adapter_up.weight"),
    ("unknown method", "unknown adapter 'seq_bnn'"),
    ("not ours", "no 'parity' key"),
])
def test_bad_adapter_folders_give_one_line_and_exit_2(tmp_path, capsys, case, expected):
    source = write_adapter(tmp_path / "source")
    command, options = "hf2paddle", []
    config_file = source / "adapter_config.json"
    if case == "wrong form":
        command = "paddle2tf"
    elif case == "tf1":
        command = "tf1bert2hf"
    elif case == "verify":
        options = ["--verify"]
    elif case == "other family":
        options = ["--family", "funnel"]
    elif case == "missing tensor":
        from backends.tensorfile import SafetensorsReader, save_arrays

        arrays = dict(SafetensorsReader(source / "adapter.safetensors"))
        del arrays["bert.encoder.layer.1.output.adapters.task.adapter_up.weight"]
        save_arrays(source / "adapter.safetensors", arrays)
    elif case in ("unknown method", "not ours"):
        data = json.loads(config_file.read_text())
        if case == "unknown method":
            data["parity"]["adapter"] = "seq_bnn"
        else:
            del data["parity"]
        config_file.write_text(json.dumps(data))
    capsys.readouterr()
    assert convert(command, source, tmp_path / "out", *options) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()
