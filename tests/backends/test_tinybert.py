"""TinyBERT: the ports are the reference's function for every head and switch, including what TinyBERT's
losses take (pre-softmax attention scores, fit_dense of every hidden state); PaddleNLP's classes (and its
distillation hooks) agree; PaddleNLP and Huawei checkpoints read; bad configs and weights are named.
Helpers come from test_bert.py."""
from __future__ import annotations

import re

import numpy as np
import pytest

from backends import family, preset
from backends.bert.modeling_torch import MASK_BIAS
from backends.errors import ConfigError
from backends.tinybert.config import TinyBertConfig
from backends.checkpoints import open_checkpoint
from backends.run import run_backend
from backends.tinybert.weights import CHECKPOINT_RULES, PADDLENLP_UNUSED

from ..conftest import BACKENDS
from .test_bert import (
    PORTS, SWITCHES, TOLERANCE, check_bad_weights_are_named, check_gradients_reach_every_parameter,
    check_paddlenlp_base, check_port, check_rules_round_trip, paddlenlp_inputs, paddlenlp_model, run, tiny_case,
    worst_difference,
)

SPEC = family("tinybert")
PRESET = "tinybert-4l-312d"
PADDLENLP_HEADS = {"seqcls": "TinyBertForSequenceClassification", "qa": "TinyBertForQuestionAnswering",
                   "mc": "TinyBertForMultipleChoice"}

pytestmark = pytest.mark.skipif("torch" not in BACKENDS, reason="the torch reference is not installed")


@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("fw", PORTS)
def test_port_is_the_reference_function(fw, head, switch):
    """float64: every output (fit_hidden_states too), attention score, the loss and every gradient."""
    check_port("tinybert", PRESET, fw, head, switch, "float64")


@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("fw", PORTS)
def test_port_float32(fw, head):
    check_port("tinybert", PRESET, fw, head, "default", "float32")


@pytest.mark.parametrize("head", SPEC.heads)
def test_gradients_reach_every_parameter(head):
    """All but the pooler of the QA head, which PaddleNLP's TinyBertModel holds and QA does not use."""
    unused = ["tinybert.pooler.dense.bias", "tinybert.pooler.dense.weight"] if head == "qa" else []
    check_gradients_reach_every_parameter("tinybert", PRESET, head, unused)


@pytest.mark.parametrize("fw", BACKENDS)
def test_distillation_outputs(fw):
    """attention_scores are the pre-softmax scores (masked keys shifted by MASK_BIAS, as TinyBERT's teachers);
    fit_hidden_states is fit_dense of every hidden state, stacked [layers + 1, B, T, fit_size]."""
    config, params, inputs = tiny_case("tinybert", PRESET, "base")
    result = run("tinybert", PRESET, fw, "base", "default", "float64")
    masked = inputs["attention_mask"][:, None, None, :] == 0
    for i in range(config.num_hidden_layers):
        scores = result[f"attention_scores.{i}"]
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        assert np.allclose(probs / probs.sum(-1, keepdims=True), result[f"attentions.{i}"], rtol=0, atol=1e-15)
        assert (np.broadcast_to(masked, scores.shape) == (scores < MASK_BIAS / 2)).all()
    hidden = np.stack([result[f"hidden_states.{i}"] for i in range(config.num_hidden_layers + 1)])
    fitted = hidden @ params["fit_dense.weight"].T + params["fit_dense.bias"]
    assert result["fit_hidden_states"].shape == (config.num_hidden_layers + 1, 3, 9, config.fit_size)
    assert np.abs(result["fit_hidden_states"] - fitted).max() <= 1e-13


@pytest.mark.parametrize("fw", BACKENDS)
def test_ports_expose_canonical_names_and_round_trip(fw):
    check_rules_round_trip("tinybert", PRESET, fw)


@pytest.mark.parametrize("fw", BACKENDS)
def test_bad_weights_are_named(fw):
    check_bad_weights_are_named("tinybert", PRESET, fw, "seqcls")


def test_reads_huawei_checkpoints():
    """Huawei's TinyBERT (PyTorch): encoder under `bert.`, fit_dense on the top model, maybe pretraining heads."""
    rules = CHECKPOINT_RULES["huawei"]
    for head in ("base", "seqcls"):
        config, params, _ = tiny_case("tinybert", PRESET, head)
        stored = dict(rules.to_target(name, array) for name, array in params.items())
        assert "fit_dense.weight" in stored and "bert.encoder.layer.0.attention.self.query.weight" in stored
        names = rules.target_names(params)  # stored name -> canonical name: every parameter has its own
        loaded = {names[name]: rules.to_canonical(names[name], array) for name, array in stored.items()}
        assert loaded.keys() == params.keys() and all(np.array_equal(loaded[k], params[k]) for k in params)


@pytest.mark.parametrize("key, value", [("fit_size", 0), ("fit_size", 7.5), ("hidden_size", 313)])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"tinybert config: {key}="):
        TinyBertConfig(**{key: value})


def test_config_round_trip_and_paddlenlp_keys():
    config = preset(PRESET).config
    assert TinyBertConfig.from_dict(config.to_dict()) == config
    # a PaddleNLP config: its attribute_map names; a pooler other than tanh is not ported
    assert TinyBertConfig.from_dict({"num_classes": 3, "dropout": 0.0, "pool_act": "tanh"}).num_labels == 3
    with pytest.raises(ConfigError, match="pool_act"):
        TinyBertConfig.from_dict({"pool_act": "relu"})


@pytest.mark.oracle
@pytest.mark.skipif("paddle" not in BACKENDS, reason="PaddlePaddle is not installed")
def test_presets_are_paddlenlp_configurations():
    configuration = pytest.importorskip("paddlenlp.transformers.tinybert.configuration")
    for name in ("tinybert-4l-312d", "tinybert-6l-768d"):
        released = configuration.TINYBERT_PRETRAINED_INIT_CONFIGURATION[name]
        assert TinyBertConfig.from_dict(released) == preset(name).config


@pytest.mark.oracle
@pytest.mark.skipif("paddle" not in BACKENDS, reason="PaddlePaddle is not installed")
def test_paddle_port_matches_paddlenlp_and_its_distillation_hooks():
    """PaddleNLP's TinyBertModel: outputs, hidden states, attentions; with its `to_distill` hooks the
    pre-softmax scores, and its fit_dense over the hidden states."""
    import paddle

    distill_utils = pytest.importorskip("paddlenlp.transformers.distill_utils")
    found = check_paddlenlp_base("tinybert", PRESET, "TinyBertModel", "TinyBertConfig")
    # hooked before its first call (a call asking for attentions leaves PaddleNLP's layers returning tuples)
    model, _ = paddlenlp_model("tinybert", found["config"], found["params"], "TinyBertModel", "TinyBertConfig")
    model = distill_utils.to_distill(model, return_attentions=True, return_layer_outputs=True)
    model(**paddlenlp_inputs(found["inputs"]))
    oracle = {f"attention_scores.{i}": t.numpy() for i, t in enumerate(model.outputs.attentions)}
    oracle["fit_hidden_states"] = model.fit_dense(paddle.stack(model.outputs.hidden_states)).numpy()
    difference, tensor = worst_difference(oracle, found["ours"], names=oracle)
    assert difference <= TOLERANCE["float32"], f"PaddleNLP distillation: {tensor} differs by {difference:.3g}"


@pytest.mark.oracle
@pytest.mark.skipif("paddle" not in BACKENDS, reason="PaddlePaddle is not installed")
@pytest.mark.parametrize("head", PADDLENLP_HEADS)
def test_paddle_heads_match_paddlenlp(head):
    config, params, inputs = tiny_case("tinybert", PRESET, head)
    params["tinybert.embeddings.word_embeddings.weight"][config.pad_token_id] = 0.0  # PaddleNLP's padding_idx
    model, kept = paddlenlp_model("tinybert", config, params, PADDLENLP_HEADS[head], "TinyBertConfig")
    assert all(any(re.fullmatch(p, k) for p in PADDLENLP_UNUSED) for k in kept), kept
    outputs = model(**paddlenlp_inputs(inputs))
    names = ("start_logits", "end_logits") if head == "qa" else ("logits",)
    oracle = dict(zip(names, [t.numpy() for t in (outputs if head == "qa" else [outputs])]))
    ours = run_backend("tinybert", "paddle", config, head, params, inputs, "float32", backward=False)
    difference, tensor = worst_difference(oracle, ours, names=oracle)
    assert difference <= TOLERANCE["float32"], f"PaddleNLP {head}: {tensor} differs by {difference:.3g}"


@pytest.mark.oracle
@pytest.mark.skipif("paddle" not in BACKENDS, reason="PaddlePaddle is not installed")
def test_reads_paddlenlp_checkpoints(tmp_path):
    """Every key of a TinyBertModel PaddleNLP saved is read back to our weights (its fit_denses, which our
    ports do not use, as optional parts)."""
    config, params, _ = tiny_case("tinybert", PRESET, "base")
    model, _ = paddlenlp_model("tinybert", config, params, "TinyBertModel", "TinyBertConfig")
    model.save_pretrained(str(tmp_path))
    checkpoint = open_checkpoint("paddle", tmp_path, family="tinybert")
    loaded = {name: checkpoint.load(name) for name in checkpoint.stored if name in params}
    checkpoint.close()
    assert loaded.keys() == params.keys() and checkpoint.absent == []
    assert all(np.array_equal(loaded[k], params[k].astype(np.float32)) for k in params)
