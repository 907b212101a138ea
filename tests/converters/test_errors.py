"""Bad input ends with exit code 2 and one line naming the file or key, never with a traceback or a
partial output; code in a crafted pickle never runs."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

import converters.core
from backends.tensorfile import save_arrays

from ..conftest import REPO
from .conftest import cli, convert, tiny_config, write_hf


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.fixture
def source(tmp_path):
    return write_hf(tmp_path / "source", "funnel", "model")


def only(directory) -> list:
    """What a directory holds (a failed conversion leaves nothing, not even a temporary)."""
    return sorted(p.name for p in directory.iterdir())


class Evil:
    """Unpickling this runs os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_pickle_is_refused_and_never_runs(tmp_path, source):
    paddle = tmp_path / "paddle"
    assert convert("hf2paddle", source, paddle) == 0
    marker = tmp_path / "pwned"
    state = {"embeddings.word_embeddings.weight": Evil(marker)}
    (paddle / "model_state.pdparams").write_bytes(pickle.dumps(state, protocol=2))
    result = cli("paddle2hf", paddle, tmp_path / "out")
    assert result.returncode == 2 and not marker.exists() and not (tmp_path / "out").exists()
    assert result.stderr.strip().splitlines() == [
        f"error: {paddle / 'model_state.pdparams'}: refusing to load: the pickle calls posix.system "
        "(only numpy arrays and plain containers are allowed)"]


@pytest.mark.parametrize("payload", [
    pickle.dumps({"w": np.ones(3, np.float32), "x": __import__("builtins").eval}, protocol=4),
    pickle.dumps({"w": np.array([object()], dtype=object)}, protocol=2)], ids=["global", "object-array"])
def test_other_crafted_pickles_are_refused(tmp_path, source, capsys, payload):
    paddle = tmp_path / "paddle"
    assert convert("hf2paddle", source, paddle) == 0
    (paddle / "model_state.pdparams").write_bytes(payload)
    assert convert("paddle2hf", paddle, tmp_path / "out") == 2
    assert "model_state.pdparams" in one_line_error(capsys)


@pytest.mark.parametrize("target,weights", [("hf", "model.safetensors"), ("paddle", "model_state.pdparams"),
                                            ("tf", "tf_model.h5")])
def test_truncated_weights(tmp_path, capsys, target, weights):
    source = write_hf(tmp_path / "source", "funnel", "model", config=tiny_config("funnel", vocab_size=4096))
    directory = source
    if target != "hf":
        directory = tmp_path / target
        assert convert(f"hf2{target}", source, directory) == 0
    data = (directory / weights).read_bytes()
    (directory / weights).write_bytes(data[: len(data) - 5000])
    assert convert(f"{target}2{'tf' if target == 'hf' else 'hf'}", directory, tmp_path / "out") == 2
    message = one_line_error(capsys)
    assert str(directory / weights) in message
    assert only(tmp_path) == sorted(["source", *([target] if target != "hf" else [])])


def test_truncated_safetensors_through_the_cli(tmp_path, source):
    weights = source / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    result = cli("hf2paddle", source, tmp_path / "out")
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip().splitlines() == [
        f"error: {weights}: truncated: decoder.layers.1.ffn.layer_norm.bias ends at byte "
        f"{weights.stat().st_size + 100}, the file has {weights.stat().st_size}"]


def test_wrong_family(tmp_path, source, capsys):
    assert convert("hf2paddle", source, tmp_path / "out", "--family", "bert") == 2
    assert one_line_error(capsys) == f"error: {source / 'config.json'}: model_type is 'funnel', expected 'bert'"


def test_weights_of_another_family(tmp_path, capsys):
    source = write_hf(tmp_path / "source", "funnel", "model")
    bert = write_hf(tmp_path / "bert", "bert", "base")
    (source / "model.safetensors").write_bytes((bert / "model.safetensors").read_bytes())
    assert convert("hf2tf", source, tmp_path / "out") == 2
    assert "missing keys" in one_line_error(capsys)


def test_config_and_weights_disagree(tmp_path, source, capsys):
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "vocab_size": 65}))
    assert convert("hf2paddle", source, tmp_path / "out") == 2
    assert one_line_error(capsys) == (f"error: {source / 'model.safetensors'}: embeddings.word_embeddings.weight "
                                      "has shape [64, 16], the config needs [65, 16]")


def test_invalid_config(tmp_path, source, capsys):
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "d_model": 15}))
    assert convert("hf2paddle", source, tmp_path / "out") == 2
    assert "d_model=15" in one_line_error(capsys)


def test_missing_and_unknown_keys(tmp_path, source, capsys):
    params = load_file(str(source / "model.safetensors"))
    save_arrays(source / "model.safetensors", {**params, "extra.weight": np.ones(2, np.float32)})
    assert convert("hf2paddle", source, tmp_path / "out") == 2
    assert "unexpected keys (1): extra.weight" in one_line_error(capsys)
    summary = tmp_path / "summary.json"
    assert convert("hf2paddle", source, tmp_path / "out", "--allow-unknown", r"extra\..*", "--json", summary) == 0
    assert "extra.weight" in capsys.readouterr().err
    assert json.loads(summary.read_text())["skipped"] == ["extra.weight"]
    del params["embeddings.layer_norm.bias"]
    save_arrays(source / "model.safetensors", params)
    assert convert("hf2paddle", source, tmp_path / "out2") == 2
    assert "missing keys (1): embeddings.layer_norm.bias" in one_line_error(capsys)


def test_nan_warns_and_strict_fails(tmp_path, source, capsys):
    params = load_file(str(source / "model.safetensors"))
    params["encoder.blocks.0.0.ffn.linear_1.weight"][0, 0] = np.nan
    save_arrays(source / "model.safetensors", params)
    assert convert("hf2tf", source, tmp_path / "strict", "--strict") == 2
    assert one_line_error(capsys).endswith("encoder.blocks.0.0.ffn.linear_1.weight holds NaN or Inf values")
    assert not (tmp_path / "strict").exists()
    assert convert("hf2tf", source, tmp_path / "lenient", "--json", tmp_path / "s.json") == 0
    assert "holds NaN or Inf values (--strict makes this an error)" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "s.json").read_text())["warnings"]) == 1


def test_nan_warnings_come_in_the_written_order(tmp_path, source, capsys):
    """Tensors are read and checked by two prefetch threads; their warnings still follow the order in which the
    writer takes the tensors, on stderr and in the summary."""
    params = load_file(str(source / "model.safetensors"))
    poisoned = [name for name in params if params[name].ndim == 2]
    for name in poisoned:
        params[name][0, 0] = np.nan
    save_arrays(source / "model.safetensors", params)
    assert converters.core.PREFETCH_THREADS > 1
    assert convert("hf2paddle", source, tmp_path / "out", "--json", tmp_path / "s.json") == 0
    warned = json.loads((tmp_path / "s.json").read_text())["warnings"]
    written = list(converters.core.open_checkpoint("paddle", tmp_path / "out").source.tensors)
    order = {name: index for index, name in enumerate(written)}
    rules = converters.core.format_rules("funnel", "paddle")
    named = [next(name for name in poisoned if f" {name} holds" in line) for line in warned]
    assert sorted(named) == sorted(poisoned)
    assert named == sorted(named, key=lambda name: order[rules.rules.rule_for(name)[0]])
    stderr = [line for line in capsys.readouterr().err.splitlines() if "holds NaN" in line]
    assert [line.removeprefix("warning: ").removesuffix(" (--strict makes this an error)") for line in stderr] == warned


def test_cast_overflow_warns(tmp_path, source, capsys):
    params = load_file(str(source / "model.safetensors"))
    params["encoder.blocks.0.0.ffn.linear_1.weight"][0, 0] = 1e6
    save_arrays(source / "model.safetensors", params)
    assert convert("hf2paddle", source, tmp_path / "out", "--dtype", "float16", "--strict") == 2
    assert one_line_error(capsys).endswith("linear_1.weight overflows float16")


def test_existing_output_needs_force(tmp_path, source, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("hf2paddle", source, out)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {out}: already exists; pass --force to replace it"]
    assert only(out) == ["keep.txt"]
    assert convert("hf2paddle", source, out, "--force") == 0
    assert only(out) == ["config.json", "model_config.json", "model_state.pdparams", "vocab.txt"]
    assert only(tmp_path) == ["out", "source"]


def test_missing_vocab(tmp_path, capsys):
    source = write_hf(tmp_path / "source", "funnel", "model", vocab=False)
    assert convert("hf2paddle", source, tmp_path / "out") == 2
    assert one_line_error(capsys).startswith(f"error: {source}: no vocabulary")
    assert convert("hf2paddle", source, tmp_path / "out", "--no-tokenizer") == 0
    assert only(tmp_path / "out") == ["config.json", "model_config.json", "model_state.pdparams"]


@pytest.mark.parametrize("command,config", [("hf2paddle", "config.json"), ("paddle2hf", "config.json")])
def test_missing_config(tmp_path, source, capsys, command, config):
    directory = source
    if command.startswith("paddle"):
        directory = tmp_path / "paddle"
        assert convert("hf2paddle", source, directory) == 0
        (directory / "model_config.json").unlink()
    (directory / config).unlink()
    assert convert(command, directory, tmp_path / "out") == 2
    assert one_line_error(capsys).startswith(f"error: {directory}")


def test_missing_source(tmp_path, capsys):
    assert convert("hf2tf", tmp_path / "nowhere", tmp_path / "out") == 2
    assert one_line_error(capsys) == f"error: {tmp_path / 'nowhere'}: no such directory"


@pytest.mark.parametrize("signal", [KeyboardInterrupt, RuntimeError])
def test_interrupted_or_crashed_conversion_leaves_nothing(tmp_path, source, monkeypatch, signal):
    calls = []
    original = converters.core._finite

    def fail_midway(array):
        calls.append(1)
        if len(calls) == 40:
            raise signal("stop")
        return original(array)

    monkeypatch.setattr(converters.core, "_finite", fail_midway)
    if signal is KeyboardInterrupt:
        assert convert("hf2paddle", source, tmp_path / "out") == 130
    else:
        with pytest.raises(RuntimeError):
            convert("hf2paddle", source, tmp_path / "out")
    assert len(calls) >= 40 and only(tmp_path) == ["source"]


def test_ctrl_c_through_the_cli_leaves_nothing(tmp_path):
    config = tiny_config("funnel", vocab_size=1_000_000)  # a 64 MB embedding: time to interrupt
    source = write_hf(tmp_path / "source", "funnel", "base", config=config)
    process = subprocess.Popen([sys.executable, "-m", "converters", "hf2tf", source, tmp_path / "out"], cwd=REPO,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip().splitlines()[-1] == "interrupted: nothing written"
    assert only(tmp_path) == ["source"]


def test_bad_options(tmp_path, source, capsys):
    assert convert("hf2paddle", source, tmp_path / "out", "--head", "lm") == 2
    assert "no head 'lm'" in one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        convert("hf2paddle", source, tmp_path / "out", "--dtype", "int8")
    assert exc.value.code == 2


def test_help_lists_every_command():
    result = cli("--help")
    assert result.returncode == 0
    for command in converters.core.COMMANDS:
        assert command in result.stdout
    sub = cli("hf2paddle", "--help")
    for option in ("--family", "--head", "--dtype", "--verify", "--force", "--strict", "--allow-unknown",
                   "--no-tokenizer", "--json"):
        assert option in sub.stdout
