"""RoBERTa: the ports are the reference's function for every head and switch, positions skip the padding
(also when inputs_embeds is given), the reference is transformers' function, transformers' TF and PaddleNLP
classes agree, bad configs and weights are named. Helpers come from test_bert.py."""
from __future__ import annotations

import numpy as np
import pytest

from backends import family, framework, modeling, preset
from backends.errors import ConfigError, WeightsError
from backends.roberta.config import RobertaConfig

from ..conftest import BACKENDS
from .checkpoint_folders import read_back
from .test_bert import (
    PORTS, SWITCHES, check_bad_weights_are_named, check_config_reads_transformers,
    check_gradients_reach_every_parameter, check_paddlenlp_base, check_port, check_rules_round_trip,
    check_transformers_tf, check_transformers_torch, tiny_case,
)

SPEC = family("roberta")
PRESET = "roberta-base"

pytestmark = pytest.mark.skipif("torch" not in BACKENDS, reason="the torch reference is not installed")


def expected_positions(ids: np.ndarray, pad: int) -> np.ndarray:
    """fairseq's make_positions: non-padding tokens count from pad + 1, padding keeps pad."""
    keep = ids != pad
    return np.cumsum(keep, axis=1) * keep + pad


@pytest.mark.parametrize("switch", [s for s in SWITCHES if s != "no_padding_id"])  # positions need the padding id
@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("fw", PORTS)
def test_port_is_the_reference_function(fw, head, switch):
    """float64: every output, hidden state, attention, attention score, the loss and every gradient."""
    check_port("roberta", PRESET, fw, head, switch, "float64")


@pytest.mark.parametrize("head", SPEC.heads)
@pytest.mark.parametrize("fw", PORTS)
def test_port_float32(fw, head):
    check_port("roberta", PRESET, fw, head, "default", "float32")


@pytest.mark.parametrize("head", SPEC.heads)
def test_gradients_reach_every_parameter(head):
    check_gradients_reach_every_parameter("roberta", PRESET, head)


@pytest.mark.parametrize("fw", BACKENDS)
def test_positions_skip_padding_and_come_from_input_ids(fw):
    config, _, inputs = tiny_case("roberta", PRESET, "base")
    ids, pad = inputs["input_ids"], config.pad_token_id
    positions = expected_positions(ids, pad)
    assert positions[2, 0] == pad and positions[2, -1] == ids.shape[1] - (ids[2] == pad).sum() + pad  # left padded
    adapter = framework(fw)
    adapter.set_default_dtype("float64")
    embeddings = modeling("roberta", fw).RobertaEmbeddings(config)
    ids_t = adapter.from_numpy(ids)
    embeds = embeddings.word_embeddings(ids_t)
    assert np.array_equal(adapter.to_numpy(embeddings.create_position_ids(ids_t, embeds)), positions)
    # embeddings alone: no padding to see, so positions pad + 1 .. pad + T (as transformers)
    sequential = adapter.to_numpy(embeddings.create_position_ids(None, embeds))
    assert np.array_equal(sequential, np.broadcast_to(np.arange(ids.shape[1]) + pad + 1, ids.shape))


@pytest.mark.parametrize("fw", BACKENDS)
def test_ports_expose_canonical_names_and_round_trip(fw):
    check_rules_round_trip("roberta", PRESET, fw)


@pytest.mark.parametrize("fw", BACKENDS)
def test_bad_weights_are_named(fw):
    check_bad_weights_are_named("roberta", PRESET, fw, "mlm")


def test_lm_head_decoder_alias_and_buffers(tmp_path):
    config, params, _ = tiny_case("roberta", PRESET, "mlm")
    aliased = {**params, "lm_head.decoder.weight": params["roberta.embeddings.word_embeddings.weight"],
               "lm_head.decoder.bias": params["lm_head.bias"], "roberta.embeddings.position_ids": np.arange(40)[None]}
    assert read_back(tmp_path / "tied", config, aliased).keys() == params.keys()
    aliased["lm_head.decoder.bias"] = aliased["lm_head.decoder.bias"] * 2
    with pytest.raises(WeightsError, match=r"lm_head\.decoder\.bias is a tied copy of lm_head\.bias"):
        read_back(tmp_path / "untied", config, aliased)


@pytest.mark.parametrize("changes, message", [
    ({"pad_token_id": None}, r"pad_token_id=None must be set"),
    ({"pad_token_id": 1, "max_position_embeddings": 2}, r"max_position_embeddings=2 must exceed pad_token_id \+ 1"),
    ({"hidden_size": 770}, r"hidden_size=770 must be a multiple of num_attention_heads=12"),
    ({"hidden_act": "mish"}, r"hidden_act='mish' must be one of"),
])
def test_bad_config_names_the_key(changes, message):
    with pytest.raises(ConfigError, match=rf"roberta config: {message}"):
        RobertaConfig(**changes)


def test_config_defaults_and_round_trip():
    config = preset(PRESET).config
    assert (config.vocab_size, config.max_position_embeddings, config.type_vocab_size, config.pad_token_id,
            config.layer_norm_eps) == (50265, 514, 1, 1, 1e-5)
    assert RobertaConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="model_type is 'bert', expected 'roberta'"):
        RobertaConfig.from_dict({"model_type": "bert"})


def test_config_reads_transformers_config():
    check_config_reads_transformers(RobertaConfig, "RobertaConfig")


@pytest.mark.parametrize("name, count", [("roberta-base", 124_645_632), ("roberta-large", 355_359_744)])
def test_preset_shapes_are_the_released_models(name, count):
    """transformers' RobertaModel parameter counts (with pooler) of the two checkpoints."""
    shapes = SPEC.param_shapes(preset(name).config, "base")
    assert sum(int(np.prod(s)) for s in shapes.values()) == count


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("head", SPEC.heads)
def test_reference_is_transformers_function(head, dtype):
    check_transformers_torch("roberta", PRESET, head, dtype, "Roberta")


@pytest.mark.oracle
@pytest.mark.skipif("tf" not in BACKENDS, reason="TensorFlow is not installed")
def test_tf_port_matches_transformers_tf():
    check_transformers_tf("roberta", PRESET, "TFRobertaModel")


@pytest.mark.oracle
@pytest.mark.skipif("paddle" not in BACKENDS, reason="PaddlePaddle is not installed")
def test_paddle_port_matches_paddlenlp():
    check_paddlenlp_base("roberta", PRESET, "RobertaModel", "RobertaConfig")
