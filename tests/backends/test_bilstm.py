"""BiLSTM student: the ports are the reference's function (outputs and gradients), padding never
matters, the weight layouts round-trip, and bad configs and weights are named."""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pytest

from backends import family, framework, modeling, preset
from backends.bilstm.config import BiLSTMConfig
from backends.bilstm.weights import LSTM_DIRECTIONS, parameter_count
from backends.build import build_model, export_params
from backends.errors import ConfigError, WeightsError
from backends.weights import perturb_constants
from backends.run import run_backend

from ..conftest import BACKENDS

SPEC = family("bilstm")
PORTS = [fw for fw in BACKENDS if fw != "torch"]
VARIANTS = {"single": "bilstm-sst2", "pair": "bilstm-pair"}
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
SENTENCES = (("input_ids", "attention_mask"), ("input_ids_b", "attention_mask_b"))

pytestmark = pytest.mark.skipif("torch" not in BACKENDS, reason="the torch reference is not installed")


def tiny_case(variant: str, seed: int = 0, batch: int = 5, seq_len: int = 7):
    """A tiny config of the preset, seeded weights (no constant tensor) and padded inputs."""
    config = SPEC.shrink(preset(VARIANTS[variant]).config)
    rng = np.random.default_rng(seed)
    params = perturb_constants(SPEC.init_params(config, "seqcls", rng), rng)
    return config, params, SPEC.make_inputs(config, "seqcls", batch, seq_len, rng)


@lru_cache(maxsize=None)
def run(fw: str, variant: str, dtype: str) -> dict:
    config, params, inputs = tiny_case(variant)
    return run_backend("bilstm", fw, config, "seqcls", params, inputs, dtype)


def worst_difference(reference: dict, result: dict) -> tuple[float, str]:
    """max |result - reference| / max(1, max |reference|) over every tensor, and the worst tensor's name."""
    assert set(result) == set(reference)
    return max((float(np.abs(result[k] - v).max()) / max(1.0, float(np.abs(v).max())), k)
               for k, v in reference.items())


def test_inputs_cover_full_length_length_one_and_padding():
    config, _, inputs = tiny_case("pair")
    for ids, mask in SENTENCES:
        lengths = inputs[mask].sum(-1)
        assert lengths.max() == inputs[mask].shape[1] and lengths.min() == 1 and len(set(lengths)) > 2
        assert (inputs[ids][inputs[mask] == 0] == config.padding_idx).all()


@pytest.mark.parametrize("dtype", TOLERANCE)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fw", PORTS)
def test_port_is_the_reference_function(fw, variant, dtype):
    """Every output, hidden state, the loss and every gradient (each parameter, the input embeddings)."""
    reference, result = run("torch", variant, dtype), run(fw, variant, dtype)
    config = tiny_case(variant)[0]
    expected = {"loss", "logits", "grad.inputs_embeds"} | {f"grad.{name}" for name in SPEC.param_shapes(config, "seqcls")}
    expected |= {f"hidden_states.{i}" for i in range(len(SPEC.hidden_state_names(config)))}
    assert set(reference) == expected
    difference, tensor = worst_difference(reference, result)
    assert difference <= TOLERANCE[dtype], f"{fw} {variant} {dtype}: {tensor} differs by {difference:.3g}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fw", BACKENDS)
def test_padded_positions_change_nothing(fw, variant):
    config, params, inputs = tiny_case(variant)
    repadded = dict(inputs)
    rng = np.random.default_rng(1)
    for ids, mask in SENTENCES:
        if ids in inputs:
            other_ids = rng.integers(0, config.vocab_size, inputs[ids].shape)
            repadded[ids] = np.where(inputs[mask] == 1, inputs[ids], other_ids)
            assert (repadded[ids] != inputs[ids]).any()
    result = run(fw, variant, "float64")
    changed = run_backend("bilstm", fw, config, "seqcls", params, repadded, "float64")
    for name, value in result.items():
        assert np.array_equal(changed[name], value), name
    padded = inputs["attention_mask"] == 0
    assert (result["hidden_states.0"][padded] == 0).all()  # BiLSTM outputs at padded positions
    assert (result["grad.inputs_embeds"][padded] == 0).all()


@pytest.mark.parametrize("fw", BACKENDS)
def test_every_rule_round_trips(fw):
    config = tiny_case("pair")[0]
    rules = SPEC.port_rules[fw]
    rng = np.random.default_rng(0)
    for name, shape in SPEC.param_shapes(config, "seqcls").items():
        array = rng.standard_normal(shape)
        target, stored = rules.to_target(name, array)
        assert target == name  # the ports expose canonical names
        assert np.array_equal(rules.to_canonical(name, stored), array), name


@pytest.mark.skipif("tf" not in BACKENDS, reason="TensorFlow is not installed")
def test_keras_bias_merges_and_splits_exactly():
    """TF keeps Keras' one LSTM bias: it holds bias_ih + bias_hh, reads back whole into bias_ih with a zero
    bias_hh (so a TF-origin checkpoint round-trips exactly), and its gradient is both biases' gradient."""
    config, params, _ = tiny_case("single")
    model = build_model("bilstm", "tf", config, "seqcls", params, dtype="float64")
    merged = {suffix: params[f"lstm.bias_ih_l0{suffix}"] + params[f"lstm.bias_hh_l0{suffix}"]
              for suffix in LSTM_DIRECTIONS}
    for suffix, cell in zip(LSTM_DIRECTIONS, (model.lstm.forward_layer, model.lstm.backward_layer)):
        assert np.array_equal(cell.kernel.numpy(), params[f"lstm.weight_ih_l0{suffix}"].T)
        assert np.array_equal(cell.recurrent_kernel.numpy(), params[f"lstm.weight_hh_l0{suffix}"].T)
        assert np.array_equal(cell.bias.numpy(), merged[suffix])
    exported = export_params(model, "bilstm", "tf")
    for suffix in LSTM_DIRECTIONS:
        assert np.array_equal(exported[f"lstm.bias_ih_l0{suffix}"], merged[suffix])
        assert not exported[f"lstm.bias_hh_l0{suffix}"].any()
    assert all(np.array_equal(exported[k], v) for k, v in params.items() if ".bias_" not in k)
    reloaded = build_model("bilstm", "tf", config, "seqcls", exported, dtype="float64")
    assert all(np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(dict(model.named_parameters()).values(), dict(reloaded.named_parameters()).values()))
    grads = run("tf", "single", "float64")
    for suffix in LSTM_DIRECTIONS:
        assert np.array_equal(grads[f"grad.lstm.bias_ih_l0{suffix}"], grads[f"grad.lstm.bias_hh_l0{suffix}"])


@pytest.mark.parametrize("fw", BACKENDS)
def test_bad_weights_are_named(fw):
    config, params, _ = tiny_case("pair")
    missing = {k: v for k, v in params.items() if k != "lstm.bias_hh_l0_reverse"}
    with pytest.raises(WeightsError, match=r"missing keys \(1\): lstm\.bias_hh_l0_reverse"):
        build_model("bilstm", fw, config, "seqcls", missing)
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): lstm\.weight_ih_l1"):
        build_model("bilstm", fw, config, "seqcls", {**params, "lstm.weight_ih_l1": params["lstm.weight_ih_l0"]})
    for name in ("lstm.weight_hh_l0", "lstm.bias_ih_l0_reverse", "fc.weight"):
        bad = {**params, name: params[name][..., :-1]}
        needs = re.escape(f"the model needs {list(params[name].shape)}")
        with pytest.raises(WeightsError, match=rf"{re.escape(name)} has shape .*, {needs}"):
            build_model("bilstm", fw, config, "seqcls", bad)


@pytest.mark.parametrize("key, value", [
    ("vocab_size", 0), ("embedding_dim", 2.5), ("hidden_size", -1), ("fc_hidden_size", None), ("num_labels", True),
    ("dropout", 1.0), ("padding_idx", 30522), ("padding_idx", -1), ("pair", "yes"),
])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"bilstm config: {key}="):
        BiLSTMConfig(**{key: value})


def test_config_json_round_trip(tmp_path):
    config = preset("bilstm-pair").config.replace(padding_idx=None, extra={"id2label": {"0": "no", "1": "yes"}})
    path = tmp_path / "config.json"
    path.write_text(config.to_json_string())
    assert BiLSTMConfig.from_json_file(path) == config
    with pytest.raises(ConfigError, match="model_type is 'funnel'"):
        BiLSTMConfig.from_dict({**config.to_dict(), "model_type": "funnel"})


@pytest.mark.parametrize("name", VARIANTS.values())
def test_preset_parameter_count_is_the_reference_model_count(name):
    config = preset(name).config
    framework("torch").set_default_dtype("float32")
    model = modeling("bilstm", "torch").HEADS["seqcls"](config)
    assert sum(p.numel() for p in model.parameters()) == parameter_count(config)
    assert f"{parameter_count(config, embeddings=False):,} parameters" in preset(name).description


def test_pair_model_needs_the_second_sentence():
    config, params, inputs = tiny_case("pair")
    model = build_model("bilstm", "torch", config, "seqcls", params)
    with pytest.raises(ValueError, match="input_ids_b"):
        model(input_ids=framework("torch").from_numpy(inputs["input_ids"]))
