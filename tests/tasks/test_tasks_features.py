"""Tokenizer loading rules, the shared pair featurizer, and the framework-free promise of tasks/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.data.features import PairExample, encode_pairs, label_array, load_tokenizer, pair_features, require_fast

REPO = Path(__file__).resolve().parents[2]


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the rest map to 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    table = {byte: chr(byte) for byte in printable} | {byte: chr(256 + n) for n, byte in enumerate(others)}
    return [table[byte] for byte in range(256)]


def write_byte_level_bpe(folder: Path) -> Path:
    """vocab.json + merges.txt: specials, the 256 byte characters, and merges building "cat"."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *byte_level_alphabet(), "ca", "cat", "<mask>"]
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\nc a\nca t\n", "utf-8")
    return folder


def test_load_wordpiece_vocab(make_vocab_dir):
    tokenizer = load_tokenizer(make_vocab_dir(["cats"]))
    assert type(tokenizer).__name__ == "BertTokenizerFast"
    assert tokenizer.tokenize("The CATS sat") == ["the", "cats", "sat"]


def test_load_saved_tokenizer_json(tmp_path, make_tokenizer):
    original = make_tokenizer()
    saved = tmp_path / "saved"
    original.save_pretrained(saved)
    (saved / "vocab.txt").unlink()  # only tokenizer.json + tokenizer_config.json are left
    tokenizer = load_tokenizer(saved)
    assert tokenizer.is_fast and tokenizer("The cat sat.")["input_ids"] == original("The cat sat.")["input_ids"]


def test_load_byte_level_bpe(tmp_path):
    tokenizer = load_tokenizer(write_byte_level_bpe(tmp_path / "roberta"))
    assert type(tokenizer).__name__ == "RobertaTokenizerFast"
    vocab = tokenizer.get_vocab()
    features = encode_pairs(tokenizer, ["cat cat"], ["a"], max_seq_length=10)
    expected = ["<s>", "cat", "Ġ", "cat", "</s>", "</s>", "a", "</s>", "<pad>", "<pad>"]
    assert features["input_ids"][0].tolist() == [vocab[token] for token in expected]
    assert features["token_type_ids"][0].tolist() == [0] * 10  # RoBERTa has a single segment id
    assert features["attention_mask"][0].tolist() == [1] * 8 + [0] * 2


def test_load_rejects_missing_and_slow(tmp_path, make_vocab_dir):
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    from transformers import BertTokenizer

    slow = BertTokenizer(str(make_vocab_dir() / "vocab.txt"))
    with pytest.raises(TypeError, match="fast tokenizer is required"):
        require_fast(slow)


def test_minilm_tokenizer_is_uncased_wordpiece(minilm_tokenizer):
    assert type(minilm_tokenizer).__name__ == "BertTokenizerFast"
    features = encode_pairs(minilm_tokenizer, ["Hello World"], None, max_seq_length=6)
    assert minilm_tokenizer.convert_ids_to_tokens(features["input_ids"][0].tolist()) == [
        "[CLS]", "hello", "world", "[SEP]", "[PAD]", "[PAD]"]


def test_label_array_rules():
    assert label_array(["b", "a"], ("a", "b")).tolist() == [1, 0]
    assert label_array([0.5, 2.0], None).dtype == np.float32
    assert label_array([None, None], ("a", "b")) is None
    with pytest.raises(ValueError, match="1 of 2 examples have no label"):
        label_array(["a", None], ("a", "b"))
    with pytest.raises(ValueError, match=r"labels \['c'\] are not in the label list"):
        label_array(["a", "c"], ("a", "b"))


def test_pair_features_rejects_mixed_inputs(make_tokenizer):
    tokenizer = make_tokenizer()
    mixed = [PairExample("0", "a", "b", "1"), PairExample("1", "a", None, "1")]
    with pytest.raises(ValueError, match="mix single texts and text pairs"):
        pair_features(mixed, tokenizer, 8, ("0", "1"))
    with pytest.raises(ValueError, match="text_a has 2 entries but text_b has 1"):
        encode_pairs(tokenizer, ["a", "b"], ["c"], 8)


FRAMEWORKS = ("torch", "tensorflow", "paddle", "jax")


def run_python(code: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_readers_and_metrics_import_no_framework_nor_transformers(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n", encoding="utf-8")
    code = f"""
import sys
from tasks.data import boolq, glue, race, squad
from tasks.metrics import glue_metrics, squad_v2_scores
examples = glue.read_glue_file({str(path)!r}, "rte")
glue_metrics("rte", [0], [glue.glue_task("rte").labels.index(examples[0].label)])
print(sorted(name for name in {FRAMEWORKS + ("transformers",)!r} if name in sys.modules))
"""
    assert run_python(code) == "[]"


def test_features_import_no_framework_with_transformers_backends_off(make_vocab_dir):
    vocab = make_vocab_dir()
    code = f"""
import sys
from tasks.data.features import load_tokenizer, PairExample
from tasks.data.glue import glue_features
from tasks.data.squad import SquadExample, squad_features
tokenizer = load_tokenizer({str(vocab)!r})
glue_features([PairExample("0", "the cat", "a dog", "1")], "mrpc", tokenizer, 8)
squad_features([SquadExample("q", "", "who sat", "the cat sat", (), True)], tokenizer, 16, 4, 8)
print(sorted(name for name in {FRAMEWORKS!r} if name in sys.modules))
"""
    # transformers imports torch on import when it is installed, unless told not to
    assert run_python(code, USE_TORCH="0", USE_TF="0", USE_FLAX="0") == "[]"


def test_two_tower_features_are_each_sentence_tokenised_alone(minilm_tokenizer):
    """bilstm-pair's inputs: input_ids/attention_mask of sentence 1 and input_ids_b/attention_mask_b of
    sentence 2, each as the tokenizer encodes that sentence on its own; the labels as for a joint model."""
    from backends import family, preset

    spec, config = family("bilstm"), preset("bilstm-pair").config
    examples = [PairExample("0", "The cat sat on the mat.", "A cat was sitting on a mat.", "1"),
                PairExample("1", "He went home early", "Nobody went anywhere that day at all, said the man.", "0")]
    features = pair_features(examples, minilm_tokenizer, 12, ["0", "1"], spec.model_inputs(config, "seqcls"))
    assert sorted(features) == ["attention_mask", "attention_mask_b", "input_ids", "input_ids_b", "labels"]
    for suffix, texts in (("", [e.text_a for e in examples]), ("_b", [e.text_b for e in examples])):
        alone = minilm_tokenizer(texts, truncation=True, max_length=12, padding="max_length")
        assert features["input_ids" + suffix].tolist() == alone["input_ids"]
        assert features["attention_mask" + suffix].tolist() == alone["attention_mask"]
        assert features["input_ids" + suffix].dtype == np.int64
    assert features["labels"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="reads a second text"):
        pair_features([PairExample("0", "one text", None, "1")], minilm_tokenizer, 12, ["0", "1"],
                      spec.model_inputs(config, "seqcls"))
