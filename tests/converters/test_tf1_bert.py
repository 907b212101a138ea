"""Google's original TF1 BERT checkpoint (written here with tf.compat.v1's Saver in Google's variable
names, with the pretraining heads, Adam slots and global_step) converts to a transformers directory
that holds exactly the source weights and loads in BertModel / BertForMaskedLM with no missing keys."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from converters.__main__ import main

from .conftest import inputs_for, random_params, tiny_config
from .oracles import max_diff, our_port, transformers_torch, write_tf1

pytestmark = pytest.mark.oracle
CONFIG = tiny_config("bert")


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
    return out


@pytest.fixture(scope="module")
def google(tmp_path_factory, workers):
    directory = tmp_path_factory.mktemp("google")
    params = {**random_params("bert", CONFIG, "mlm"), **{
        "bert." + k: v for k, v in random_params("bert", CONFIG, "base", seed=1).items() if k.startswith("pooler")}}
    variables = google_names(params, CONFIG.num_hidden_layers)
    rng = np.random.default_rng(2)
    extras = {"cls/seq_relationship/output_weights": rng.standard_normal((2, CONFIG.hidden_size)).astype(np.float32),
              "cls/seq_relationship/output_bias": np.zeros(2, np.float32), "global_step": np.int64(1000)}
    extras.update({f"{name}/adam_{m}": np.zeros_like(variables[name]) for name in list(variables)[:3] for m in "mv"})
    workers["tf"].submit(write_tf1, str(directory), {**variables, **extras}).result()
    google_config = {k: v for k, v in CONFIG.to_dict().items() if k in (
        "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size", "initializer_range",
        "intermediate_size", "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
        "type_vocab_size", "vocab_size")}
    (directory / "bert_config.json").write_text(json.dumps(google_config))
    (directory / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(CONFIG.vocab_size)) + "\n")
    return directory, params


@pytest.mark.parametrize("head,class_name", [("base", "BertModel"), ("mlm", "BertForMaskedLM")])
def test_tf1_bert_converts_and_matches(tmp_path, google, run, head, class_name):
    directory, params = google
    out, summary = tmp_path / "hf", tmp_path / "summary.json"
    argv = ["tf1bert2hf", str(directory), str(out), "--json", str(summary)] + (["--verify"] if head == "base" else
                                                                                 ["--head", "mlm"])
    assert run("tf", main, argv) == 0  # the TF worker: TensorFlow reads the checkpoint
    report = json.loads(summary.read_text())
    assert report["head"] == head and (report["verify"] is not None) == (head == "base")
    not_converted = {"global_step", "cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"}
    assert not_converted <= set(report["skipped"]) and len([s for s in report["skipped"] if "adam" in s]) == 6
    if head == "base":  # BertModel: the body and its pooler
        expected = {k.removeprefix("bert."): v for k, v in params.items() if k.startswith("bert.")}
    else:  # BertForMaskedLM: the body without pooler, and the MLM head
        expected = {k: v for k, v in params.items() if not k.startswith("bert.pooler")}
    assert {k: v.tobytes() for k, v in load_file(str(out / "model.safetensors")).items()} == \
           {k: v.tobytes() for k, v in expected.items()}
    assert (out / "vocab.txt").read_bytes() == (directory / "vocab.txt").read_bytes()
    inputs = inputs_for("bert", CONFIG, head)
    reference, info = run("torch", transformers_torch, str(out), class_name, inputs)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    ours = run("torch", our_port, "hf", str(out), "torch", inputs)
    assert max_diff(reference, ours, ["logits"] if head == "mlm" else ["last_hidden_state", "pooler_output"]) <= 1e-5
