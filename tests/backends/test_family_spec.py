"""What every family declares: its head registry feeds the ports, converters and oracles; make_inputs gives
exactly the declared inputs; one function tells a config's family to converters and tasks."""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

import backends
from backends import FAMILIES, family, family_marker, family_of_config, modeling
from backends.errors import ConfigError
from backends.spec import INPUT_AXES, Head, InputSpec

from ..conftest import BACKENDS

SIZES = {"batch": 3, "choices": 3, "seq": 9}


def configs(name: str) -> list:
    """The tiny config of every preset of a family (BiLSTM: single-sentence and pair)."""
    spec = family(name)
    return [spec.shrink(preset.config) for preset in spec.presets.values()]


@pytest.mark.parametrize("name", FAMILIES)
def test_make_inputs_gives_exactly_the_declared_inputs(name):
    spec = family(name)
    for config in configs(name):
        for head in spec.heads:
            declared = spec.model_inputs(config, head)
            assert declared and all(isinstance(item, InputSpec) for item in declared)
            assert len({item.name for item in declared}) == len(declared)
            made = spec.make_inputs(config, head, SIZES["batch"], SIZES["seq"], np.random.default_rng(0))
            assert list(made) == [item.name for item in declared], (name, head)
            lengths = {}  # text -> its inputs' one length
            for item in declared:
                assert set(item.axes) <= set(INPUT_AXES) and item.axes[0] == "batch" and item.axes[-1] == "seq"
                assert ("choices" in item.axes) == (head in spec.choice_heads), (name, head, item.name)
                assert made[item.name].dtype == np.dtype(item.dtype), (name, head, item.name)
                assert made[item.name].shape[:-1] == item.shape(SIZES)[:-1], (name, head, item.name)
                assert lengths.setdefault(item.text, made[item.name].shape[-1]) == made[item.name].shape[-1]
            # texts read together fill the length; a text read alone (a two-tower or DeFormer part) has its own
            assert lengths.get("joint", SIZES["seq"]) == SIZES["seq"] and max(lengths.values()) <= SIZES["seq"]


def test_bilstm_pair_declares_two_towers():
    spec = family("bilstm")
    single, pair = configs("bilstm")
    assert not single.pair and pair.pair
    assert [(i.name, i.feature, i.text) for i in spec.model_inputs(single, "seqcls")] == [
        ("input_ids", "input_ids", "joint"), ("attention_mask", "attention_mask", "joint")]
    assert [(i.name, i.feature, i.text) for i in spec.model_inputs(pair, "seqcls")] == [
        ("input_ids", "input_ids", "a"), ("attention_mask", "attention_mask", "a"),
        ("input_ids_b", "input_ids", "b"), ("attention_mask_b", "attention_mask", "b")]


@pytest.mark.parametrize("name", FAMILIES)
def test_head_registry_is_the_spec_heads(name):
    spec = family(name)
    assert all(isinstance(head, Head) for head in spec.head_registry.values())
    assert spec.heads == tuple(spec.head_registry)
    assert spec.final_outputs == {h: head.outputs for h, head in spec.head_registry.items()}
    assert spec.choice_heads == tuple(h for h, head in spec.head_registry.items() if head.choices)


@pytest.mark.parametrize("fw", BACKENDS)
@pytest.mark.parametrize("name", FAMILIES)
def test_port_heads_come_from_the_registry(name, fw):
    registry = family(name).head_registry
    port = modeling(name, fw).HEADS
    assert list(port) == list(registry)
    assert {h: cls.__name__ for h, cls in port.items()} == {h: head.port_class for h, head in registry.items()}


@pytest.mark.parametrize("fw", BACKENDS)
def test_task_heads_share_a_base(fw):
    """BERT's and Funnel's task heads hold the base model through one shared base class in every port."""
    for name, base in (("bert", "BertPreTrainedHead"), ("funnel", "FunnelPreTrainedHead")):
        port = modeling(name, fw)
        for head in ("seqcls", "qa", "mc"):
            assert issubclass(port.HEADS[head], getattr(port, base)), (name, fw, head)


@pytest.mark.parametrize("name", ["bert", "funnel", "roberta", "tinybert"])
def test_converter_and_oracle_classes_come_from_the_registry(name):
    from parity.oracles import TRANSFORMERS_CLASSES

    registry = family(name).head_registry
    formats = importlib.import_module(f"backends.checkpoints.rules.{name}").FORMATS
    transformers_classes = {h: head.transformers for h, head in registry.items() if head.transformers}
    assert TRANSFORMERS_CLASSES.get(name, {}) == transformers_classes
    for fmt in ("hf", "tf"):  # a family transformers lacks is written under our class names
        assert formats[fmt].classes == (transformers_classes or {h: head.port_class for h, head in registry.items()})
    assert formats["paddle"].classes == {h: head.paddlenlp for h, head in registry.items() if head.paddlenlp}


def test_family_of_config():
    assert family_of_config({"model_type": "funnel"}) == "funnel"
    assert family_of_config({"model_type": "bert", "parity_family": "tinybert"}) == "tinybert"
    assert family_of_config({"model_type": "bert"}, family_name="roberta") == "roberta"  # --family wins
    assert family_of_config({"architectures": ["BertModel"]}) is None  # the caller looks further
    with pytest.raises(ConfigError, match=r"c\.json: model_type 'gpt2' is not one of our families"):
        family_of_config({"model_type": "gpt2"}, "c.json")
    with pytest.raises(ConfigError, match=r"c\.json: parity_family 'nope' is not a family"):
        family_of_config({"model_type": "bert", "parity_family": "nope"}, "c.json")
    assert all(family_marker(name) == {} for name in FAMILIES)  # no two families share a model_type today


def test_a_shared_model_type_needs_the_family_key(monkeypatch):
    """A second family with RoBERTa's config class (a DeFormer saved from RoBERTa): the key decides, else an error."""
    real = backends.family

    def with_twin(name):
        return real("roberta") if name == "twin" else real(name)

    monkeypatch.setattr(backends, "FAMILIES", (*FAMILIES, "twin"))
    monkeypatch.setattr(backends, "family", with_twin)
    assert family_marker("twin") == {"parity_family": "twin"} and family_marker("roberta") == {
        "parity_family": "roberta"}
    assert family_of_config({"model_type": "roberta", **family_marker("twin")}) == "twin"
    with pytest.raises(ConfigError, match="model_type 'roberta' is the config of families roberta, twin; "
                                          "say which with --family or a 'parity_family' key"):
        family_of_config({"model_type": "roberta"}, "c.json")


def test_family_key_is_not_a_config_value(tmp_path):
    config = configs("bert")[0]
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config.to_dict(), "parity_family": "bert"}))
    assert type(config).from_json_file(path) == config


@pytest.mark.skipif("torch" not in BACKENDS, reason="needs torch")
def test_bert_encoder_class_hook():
    bert = modeling("bert", "torch")

    class Marked(bert.BertEncoder):
        pass

    class MarkedModel(bert.BertModel):
        encoder_class = Marked

    assert type(MarkedModel(configs("bert")[0]).encoder) is Marked
