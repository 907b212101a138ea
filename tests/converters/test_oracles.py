"""Converted checkpoints load, with no missing or unexpected keys, in the classes their ecosystems use
(PaddleNLP's and transformers' TF classes) and in our ports, and compute what transformers' PyTorch
class (or, for TinyBERT, which transformers lacks, our PyTorch reference) computes on the source."""
from __future__ import annotations

import pytest

from backends import family
from backends.checkpoints.rules import format_rules

from .conftest import FAMILY_HEADS, convert, inputs_for, tiny_config, unpadded, write_hf
from .oracles import scaled_diff, our_port, paddlenlp, transformers_tf, transformers_torch

pytestmark = pytest.mark.oracle
CLEAN = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
# parameters a PaddleNLP class has and the transformers checkpoint lacks: they are left at their init
PADDLENLP_EXTRA = {
    ("bert", "qa"): ["bert.pooler.dense.bias", "bert.pooler.dense.weight"],
    ("bert", "tokcls"): ["bert.pooler.dense.bias", "bert.pooler.dense.weight"],
    ("bert", "mlm"): ["bert.pooler.dense.bias", "bert.pooler.dense.weight"],
}
# parameters a PaddleNLP class lists that are tied to one the checkpoint holds (PaddleNLP saves both; the
# converters write the one): reported missing, yet loaded
PADDLENLP_TIED = {("funnel", "mlm"): ["lm_head.weight"]}
TRANSFORMERS = ("funnel", "bert", "roberta")  # families transformers has
# families whose inputs no third-party class takes (the DeFormer's question and passage apart): our ports only
OURS_ONLY = ("deformer",)


def paddlenlp_extra(family_name: str, head: str, config) -> list:
    if family_name == "tinybert":  # PaddleNLP's per-layer fit_denses (TinyBERT v2), not modeled
        prefix = "" if head == "base" else "tinybert."
        return sorted(f"{prefix}fit_denses.{i}.{p}" for i in range(config.num_hidden_layers + 1)
                      for p in ("weight", "bias"))
    return PADDLENLP_EXTRA.get((family_name, head), [])


@pytest.mark.parametrize("family_name,head", FAMILY_HEADS)
def test_converted_checkpoints_load_and_agree(tmp_path, run, family_name, head):
    config = tiny_config(family_name, head)
    source = write_hf(tmp_path / "hf", family_name, head, config=config)
    inputs = inputs_for(family_name, config, head)
    class_name = format_rules(family_name, "hf", config).classes[head]
    targets = {"tf": tmp_path / "tf"}
    if head in format_rules(family_name, "paddle", config).classes:
        targets["paddle"] = tmp_path / "paddle"
    for fmt, path in targets.items():
        assert convert(f"hf2{fmt}", source, path) == 0

    if family_name in TRANSFORMERS:
        reference, info = run("torch", transformers_torch, str(source), class_name, inputs)
        assert info == CLEAN
        tf_out, tf_info = run("tf", transformers_tf, str(targets["tf"]), class_name, inputs)
        assert tf_info == CLEAN
        assert scaled_diff(reference, tf_out) <= 1e-5
    else:
        reference = run("torch", our_port, "hf", str(source), "torch", inputs)
    names = sorted(set(reference) & {"last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits",
                                     "prediction_logits", "seq_relationship_logits"})
    if "paddle" in targets and family_name not in OURS_ONLY:
        paddle_class = format_rules(family_name, "paddle", config).classes[head]
        paddle_out, paddle_info = run("paddle", paddlenlp, str(targets["paddle"]), paddle_class, inputs,
                                      family(family_name).final_outputs[head])
        tied = PADDLENLP_TIED.get((family_name, head), [])
        assert paddle_info == {**CLEAN, "missing_keys": sorted(paddlenlp_extra(family_name, head, config) + tied)}
        if not paddlenlp_extra(family_name, head, config):  # extra parameters at their init change outputs
            assert scaled_diff(unpadded(reference, inputs), unpadded(paddle_out, inputs), names) <= 1e-5
    for fw, fmt in (("torch", "hf"), ("paddle", "paddle"), ("tf", "tf")):
        if fmt in targets or fmt == "hf":
            path = source if fmt == "hf" else targets[fmt]
            assert scaled_diff(reference, run(fw, our_port, fmt, str(path), fw, inputs), names) <= 1e-5, fw
