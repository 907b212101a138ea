"""Google's original TF1 BERT checkpoint (written here with tf.compat.v1's Saver in Google's variable
names, with the pre-training heads, Adam slots and global_step) converts to a transformers directory
that holds exactly the source weights (BertForPreTraining; BertModel or BertForMaskedLM with --head) and
loads with no missing keys, then on to PaddleNLP's and transformers' TF pre-training classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from converters.__main__ import main

from .conftest import convert, inputs_for, random_params, real_text_inputs, tiny_config
from .oracles import scaled_diff, our_port, paddlenlp, transformers_tf, transformers_torch, write_tf1

pytestmark = pytest.mark.oracle
# PaddleNLP's LM head normalises with epsilon 1e-5 whatever the config says: with 1e-5 all classes agree
CONFIG = tiny_config("bert", layer_norm_eps=1e-5)
CLEAN = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}


def google_names(params: dict, layers: int) -> dict:
    """Canonical BERT (pretraining) parameters under the names and layouts of google-research/bert."""
    def kernel(name):
        return params[name + ".weight"].T

    out = {f"bert/embeddings/{t}_embeddings": params[f"bert.embeddings.{t}_embeddings.weight"]
           for t in ("word", "position", "token_type")}
    norms = {"bert/embeddings/LayerNorm": "bert.embeddings.LayerNorm",
             "cls/predictions/transform/LayerNorm": "cls.predictions.transform.LayerNorm"}
    denses = {"bert/pooler/dense": "bert.pooler.dense",
              "cls/predictions/transform/dense": "cls.predictions.transform.dense"}
    for i in range(layers):
        tf, pt = f"bert/encoder/layer_{i}/", f"bert.encoder.layer.{i}."
        for m in ("attention/self/query", "attention/self/key", "attention/self/value", "attention/output/dense",
                  "intermediate/dense", "output/dense"):
            denses[tf + m] = pt + m.replace("/", ".")
        for m in ("attention/output/LayerNorm", "output/LayerNorm"):
            norms[tf + m] = pt + m.replace("/", ".")
    for tf, pt in denses.items():
        out[tf + "/kernel"], out[tf + "/bias"] = kernel(pt), params[pt + ".bias"]
    for tf, pt in norms.items():
        out[tf + "/gamma"], out[tf + "/beta"] = params[pt + ".weight"], params[pt + ".bias"]
    out["cls/predictions/output_bias"] = params["cls.predictions.bias"]
    out["cls/seq_relationship/output_weights"] = params["cls.seq_relationship.weight"]  # [2, hidden], not a kernel
    out["cls/seq_relationship/output_bias"] = params["cls.seq_relationship.bias"]
    return out


@pytest.fixture(scope="module")
def google(tmp_path_factory, workers):
    directory = tmp_path_factory.mktemp("google")
    params = random_params("bert", CONFIG, "pretraining")
    variables = google_names(params, CONFIG.num_hidden_layers)
    extras = {"global_step": np.int64(1000)}
    extras.update({f"{name}/adam_{m}": np.zeros_like(variables[name]) for name in list(variables)[:3] for m in "mv"})
    workers["tf"].submit(write_tf1, str(directory), {**variables, **extras}).result()
    google_config = {k: v for k, v in CONFIG.to_dict().items() if k in (
        "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size", "initializer_range",
        "intermediate_size", "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
        "type_vocab_size", "vocab_size", "layer_norm_eps")}
    (directory / "bert_config.json").write_text(json.dumps(google_config))
    (directory / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(CONFIG.vocab_size)) + "\n")
    return directory, params


@pytest.mark.parametrize("head,class_name", [(None, "BertForPreTraining"), ("base", "BertModel"),
                                             ("mlm", "BertForMaskedLM")])
def test_tf1_bert_converts_and_matches(tmp_path, google, run, head, class_name):
    directory, params = google
    out, summary = tmp_path / "hf", tmp_path / "summary.json"
    argv = ["tf1bert2hf", str(directory), str(out), "--json", str(summary)] + (["--head", head] if head else
                                                                                 ["--verify"])
    assert run("tf", main, argv) == 0  # the TF worker: TensorFlow reads the checkpoint
    report = json.loads(summary.read_text())
    assert report["head"] == (head or "pretraining") and (report["verify"] is not None) == (head is None)
    assert "global_step" in report["skipped"] and len([s for s in report["skipped"] if "adam" in s]) == 6
    assert len(report["skipped"]) == 7
    if head is None:  # BertForPreTraining: everything
        expected, left_out = params, []
    elif head == "base":  # BertModel: the body and its pooler
        expected = {k.removeprefix("bert."): v for k, v in params.items() if k.startswith("bert.")}
        left_out = [name for name in google_names(params, CONFIG.num_hidden_layers) if name.startswith("cls/")]
    else:  # BertForMaskedLM: the body (its pooler carried along, noted) and the MLM head
        expected = {k: v for k, v in params.items() if not k.startswith("cls.seq_relationship")}
        left_out = ["cls/seq_relationship/output_bias", "cls/seq_relationship/output_weights"]
    assert report["left_out"] == sorted(left_out)
    assert {k: v.tobytes() for k, v in load_file(str(out / "model.safetensors")).items()} == \
           {k: v.tobytes() for k, v in expected.items()}
    assert (out / "vocab.txt").read_bytes() == (directory / "vocab.txt").read_bytes()
    inputs = inputs_for("bert", CONFIG, head or "pretraining")
    reference, info = run("torch", transformers_torch, str(out), class_name, inputs)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == (
        ["bert.pooler.dense.bias", "bert.pooler.dense.weight"] if head == "mlm" else [])
    assert any("pooler" in note for note in report["notes"]) == (head == "mlm")
    ours = run("torch", our_port, "hf", str(out), "torch", inputs)
    names = {None: ["prediction_logits", "seq_relationship_logits"], "mlm": ["logits"],
             "base": ["last_hidden_state", "pooler_output"]}[head]
    assert scaled_diff(reference, ours, names) <= 1e-5


def test_tf1_bert_pretraining_heads_chain_on(tmp_path, google, run):
    """tf1bert2hf, then hf2paddle and hf2tf: PaddleNLP's BertForPretraining and transformers'
    TFBertForPreTraining load the results cleanly and compute transformers' MLM and next-sentence logits."""
    directory, _ = google
    assert run("tf", main, ["tf1bert2hf", str(directory), str(tmp_path / "hf")]) == 0
    assert convert("hf2paddle", tmp_path / "hf", tmp_path / "paddle") == 0
    assert convert("hf2tf", tmp_path / "hf", tmp_path / "tf") == 0
    inputs = real_text_inputs(CONFIG)
    reference, info = run("torch", transformers_torch, str(tmp_path / "hf"), "BertForPreTraining", inputs)
    assert info == CLEAN
    names = ["prediction_logits", "seq_relationship_logits"]
    paddle_out, paddle_info = run("paddle", paddlenlp, str(tmp_path / "paddle"), "BertForPretraining", inputs, names)
    assert paddle_info == CLEAN
    tf_out, tf_info = run("tf", transformers_tf, str(tmp_path / "tf"), "BertForPreTraining", inputs)
    assert tf_info == CLEAN
    assert scaled_diff(reference, paddle_out, names) <= 1e-5 and scaled_diff(reference, tf_out, names) <= 1e-5
