"""Every layout the BERT-family classes of transformers (PyTorch and TF) and PaddleNLP save: each checkpoint is
built and saved by the library's own class from a tiny seeded config, converted in every direction, loaded by
the target library's class (nothing missing or unused but the parts the converter noted), compared with the
source class on real text (MiniLM's tokenizer), converted back bit for bit, and run through
`parity compare DIR` (float64)."""
from __future__ import annotations

import json
import re

import pytest

from backends import family
from backends.checkpoints.formats import get as get_format
from backends.checkpoints.rules import format_rules
from parity.harness import resolve_target, run_parity_many

from .conftest import convert, real_text_inputs, tiny_config, unpadded
from .oracles import (scaled_diff, our_port, paddlenlp, save_paddlenlp, save_transformers_tf, save_transformers_torch,
                      transformers_tf, transformers_torch)

pytestmark = pytest.mark.oracle
# name -> (library that saves it, family, head, config changes, class keyword arguments)
LAYOUTS = {
    "bert-pretraining": ("hf", "bert", "pretraining", {}, {}),
    "bert-mlm": ("hf", "bert", "mlm", {}, {}),
    "bert-mlm-untied": ("hf", "bert", "mlm", {"extra": {"tie_word_embeddings": False}}, {}),
    "roberta-mlm": ("hf", "roberta", "mlm", {}, {}),
    "bert-base-no-pooler": ("hf", "bert", "base", {}, {"add_pooling_layer": False}),  # sentence-transformers
    "roberta-base-no-pooler": ("hf", "roberta", "base", {}, {"add_pooling_layer": False}),
    "tf-bert-pretraining": ("tf", "bert", "pretraining", {}, {}),
    "tf-roberta-mlm": ("tf", "roberta", "mlm", {}, {}),
    "paddle-bert-pretraining": ("paddle", "bert", "pretraining", {}, {}),
    "paddle-bert-mlm": ("paddle", "bert", "mlm", {}, {}),
    "paddle-roberta-mlm": ("paddle", "roberta", "mlm", {}, {}),
    "paddle-bert-qa": ("paddle", "bert", "qa", {}, {}),  # PaddleNLP's QA class holds a pooler
    "paddle-tinybert": ("paddle", "tinybert", "base", {}, {}),  # General TinyBERT: fit_denses
}
COMMANDS = {("hf", "paddle"): "hf2paddle", ("hf", "tf"): "hf2tf", ("tf", "hf"): "tf2hf", ("tf", "paddle"): "tf2paddle",
            ("paddle", "hf"): "paddle2hf", ("paddle", "tf"): "paddle2tf"}
CASES = [(name, dst) for name, (src, *_) in LAYOUTS.items() for (s, dst) in COMMANDS if s == src]
# parts a class may build or lack beyond the checkpoint's (the converter notes them)
OPTIONAL = re.compile(r"pooler|fit_denses")


def layout_config(name: str):
    _, family_name, head, changes, _ = LAYOUTS[name]
    return tiny_config(family_name, head, **changes)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, workers):
    """name -> the checkpoint directory its library saved (built once, on first use)."""
    built = {}

    def source(name: str):
        if name not in built:
            lib, family_name, head, _, kwargs = LAYOUTS[name]
            config = layout_config(name)
            path = tmp_path_factory.mktemp(name) / "source"
            class_name = format_rules(family_name, lib).classes[head]
            if lib == "paddle":
                workers["paddle"].submit(save_paddlenlp, str(path), class_name, config.to_dict()).result()
            else:
                save = save_transformers_torch if lib == "hf" else save_transformers_tf
                workers["torch" if lib == "hf" else "tf"].submit(save, str(path), class_name, config.to_dict(),
                                                                 0, **kwargs).result()
            built[name] = path
        return built[name]

    return source


def library_outputs(run, fmt: str, family_name: str, head: str, path, inputs) -> tuple[dict, dict]:
    """Outputs and loading verdict of the class its ecosystem loads the checkpoint at `path` with (our own
    port for TinyBERT, which transformers lacks)."""
    class_name = format_rules(family_name, fmt).classes[head]
    if fmt == "paddle":
        return run("paddle", paddlenlp, str(path), class_name, inputs, family(family_name).final_outputs[head])
    if family_name == "tinybert":
        fw = {"hf": "torch", "tf": "tf"}[fmt]
        return run(fw, our_port, fmt, str(path), fw, inputs), {}
    if fmt == "hf":
        return run("torch", transformers_torch, str(path), class_name, inputs)
    return run("tf", transformers_tf, str(path), class_name, inputs)


def reported_keys(info: dict) -> list:
    return [key for kind in ("missing_keys", "unexpected_keys", "mismatched_keys") for key in info.get(kind, [])]


def stored_bytes(fmt: str, path) -> dict:
    """stored name -> (dtype, shape, bytes) of every tensor of a checkpoint directory."""
    source = get_format(fmt).read(path)
    try:
        return {name: (str(ref.dtype), ref.shape, ref.load().tobytes()) for name, ref in source.tensors.items()}
    finally:
        source.close()


@pytest.mark.parametrize("name,dst", CASES, ids=[f"{n}-to-{d}" for n, d in CASES])
def test_layout_converts_loads_agrees_and_round_trips(tmp_path, sources, run, name, dst):
    src, family_name, head, _, _ = LAYOUTS[name]
    config = layout_config(name)
    source = sources(name)
    target, summary = tmp_path / dst, tmp_path / "summary.json"
    if name == "bert-mlm-untied" and dst == "tf":  # transformers' TF classes always tie the decoder
        assert convert(COMMANDS[src, dst], source, target, "--no-tokenizer") == 2 and not target.exists()
        return
    assert convert(COMMANDS[src, dst], source, target, "--no-tokenizer", "--json", summary) == 0
    report = json.loads(summary.read_text())
    assert report["head"] == head and report["left_out"] == [] and report["skipped"] == []

    inputs = real_text_inputs(config)
    reference, source_info = library_outputs(run, src, family_name, head, source, inputs)
    assert all(OPTIONAL.search(key) for key in reported_keys(source_info)), source_info  # a saved BertModel
    got, info = library_outputs(run, dst, family_name, head, target, inputs)  # without pooler lacks one
    # nothing missing or unused but the optional parts the converter noted
    assert all(OPTIONAL.search(key) for key in reported_keys(info)), info
    for part in {OPTIONAL.search(key).group() for key in reported_keys(info)}:
        assert any(part in note for note in report["notes"]), (part, report["notes"])
    fresh_pooler = "pooler" in "".join(reported_keys(source_info) + reported_keys(info))
    names = [n for n in reference if not (fresh_pooler and n == "pooler_output")]  # each class's own fresh pooler
    assert scaled_diff(unpadded(reference, inputs), unpadded(got, inputs), names) <= 1e-5

    back = tmp_path / "back"
    assert convert(COMMANDS[dst, src], target, back, "--no-tokenizer") == 0
    assert stored_bytes(src, back) == stored_bytes(src, source)


def test_parity_compare_reads_every_layout(sources):
    """`parity compare DIR` on every saved layout (float64): every head's outputs (MLM and next-sentence logits
    of a pre-training checkpoint) and every gradient agree."""
    targets = [resolve_target(str(sources(name))) for name in LAYOUTS]
    assert [t.head for t in targets] == [layout[2] for layout in LAYOUTS.values()]
    reports = run_parity_many(targets, ["torch", "paddle", "tf"], dtypes=("float64",), seq_len=8)
    for name, report in zip(LAYOUTS, reports):
        assert report.passed, name
        compared = {r.tensor for r in report.results if r.kind == "output"}
        assert set(family(LAYOUTS[name][1]).final_outputs[report.head]) <= compared, name
