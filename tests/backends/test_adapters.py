"""Adapters (backends/adapters): config strings and their errors, the `adapters` library's parameter names,
defaults and init; every method is the same function (outputs and every gradient, adapter parameters
included) in PyTorch, Paddle and TF for every family in float64; LoRA merges into the weights; the
adapters library's own PyTorch model with the same weights gives our outputs and gradients; a model without
an adapter is exactly the model of before.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pytest

from backends import family, framework, preset
from backends.adapters import (METHODS, BnConfig, LoRAConfig, adapter_init_params, adapter_param_shapes,
                               is_adapter_param, parse_adapter_config)
from backends.build import build_model
from backends.errors import BadInput, ConfigError
from backends.run import projection, run_backend
from backends.weights import perturb_constants

from ..conftest import BACKENDS
from .test_bert import ORACLE_TOLERANCE, TOLERANCE, hf_config, worst_difference

for _fw in BACKENDS:  # in the registry's order (paddle after tensorflow segfaults)
    framework(_fw)

# family -> (preset, head): a head of each family whose outputs read every layer (Funnel's "model": its decoder too)
CASES = {"bert": ("bert-base-uncased", "seqcls"), "roberta": ("roberta-base", "qa"),
         "tinybert": ("tinybert-4l-312d", "seqcls"), "funnel": ("funnel-small", "model")}
# besides the library's named configs: a wider bottleneck, LoRA on every Linear with dropout-free scaling,
# a learned per-channel scaling, and the other residual placements
VARIANTS = ("seq_bn[reduction_factor=4]", "lora[r=2,alpha=5,attn_matrices=['q','k','v'],intermediate_lora=True,"
            "output_lora=True]", "par_bn[scaling='channel',reduction_factor=4]",
            "seq_bn[residual_before_ln=False,original_ln_after=False,reduction_factor=4]",
            "double_seq_bn[residual_before_ln='post_add',original_ln_before=True,non_linearity='gelu',leave_out=[0]]")
PORTS = [fw for fw in BACKENDS if fw != "torch"]

pytestmark = pytest.mark.skipif("torch" not in BACKENDS, reason="the torch reference is not installed")


def tiny_config(family_name: str, adapter: str | None = None):
    spec = family(family_name)
    return spec.shrink(preset(CASES[family_name][0]).config).replace(adapter=adapter)


def tiny_case(family_name: str, adapter: str | None, seed: int = 0):
    """Tiny config, the family's numpy init plus the adapter's (constant tensors perturbed: a zero LoRA B or
    up-projection would hide a wrong term), padded inputs."""
    spec, head = family(family_name), CASES[family_name][1]
    config = tiny_config(family_name, adapter)
    rng = np.random.default_rng(seed)
    params = perturb_constants(spec.init_params(config, head, rng), rng)
    return config, head, params, spec.make_inputs(config, head, 2, 9, rng)


@lru_cache(maxsize=None)
def run(family_name: str, adapter: str, fw: str, dtype: str = "float64") -> dict:
    config, head, params, inputs = tiny_case(family_name, adapter)
    return run_backend(family_name, fw, config, head, params, inputs, dtype)


# ---- config strings ------------------------------------------------------------------------------------

CONFIG_STRINGS = ("seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn", "lora", "pfeiffer", "houlsby",
                  "seq_bn[reduction_factor=8]", "lora[r=4,alpha=16]", "lora[attn_matrices=['q', 'k'], dropout=0.1]",
                  "seq_bn[leave_out=[0, 2], reduction_factor={'1': 4, 'default': 8}]", *VARIANTS)


@pytest.mark.parametrize("text", CONFIG_STRINGS)
def test_config_strings_read_as_the_library_reads_them(text):
    """Same field names, defaults and overrides: to_dict() is the library's adapter_config.json "config"."""
    adapters = pytest.importorskip("adapters")
    ours = parse_adapter_config(text)
    theirs = adapters.AdapterConfig.load(text)
    assert ours.to_dict() == theirs.to_dict()
    assert isinstance(ours, LoRAConfig if theirs.architecture == "lora" else BnConfig)


def test_library_defaults_without_the_library():
    seq, double, par, lora = map(parse_adapter_config, METHODS)
    assert (seq.reduction_factor, seq.non_linearity, seq.mh_adapter, seq.output_adapter) == (16, "relu", False, True)
    assert (seq.original_ln_before, seq.original_ln_after, seq.residual_before_ln) == (True, True, True)
    assert (double.non_linearity, double.mh_adapter, double.output_adapter, double.original_ln_before) == \
        ("swish", True, True, False)
    assert (par.is_parallel, par.scaling, par.reduction_factor, par.init_weights) == (True, 4.0, 2, "mam_adapter")
    assert (lora.r, lora.alpha, lora.attn_matrices, lora.selfattn_lora, lora.dropout) == (8, 8, ("q", "v"), True, 0.0)
    assert parse_adapter_config("lora[r=4,alpha=16]").scaling == 4.0
    assert parse_adapter_config("seq_bn[reduction_factor=8]").to_dict()["reduction_factor"] == 8
    assert "architecture" not in seq.to_dict() and lora.to_dict()["architecture"] == "lora"


@pytest.mark.parametrize("text, named", [
    ("seq_bnx", "unknown adapter 'seq_bnx'"),
    ("prefix_tuning", "unknown adapter 'prefix_tuning'"),
    ("seq_bn[reduction_factr=8]", "unknown key 'reduction_factr' for seq_bn"),
    ("lora[reduction_factor=8]", "unknown key 'reduction_factor' for lora"),
    ("lora[r=0]", "r=0 must be a positive integer"),
    ("seq_bn[reduction_factor=-1]", "reduction_factor=-1 must be a positive number"),
    ("seq_bn[non_linearity='softsign']", "non_linearity='softsign' must be one of"),
    ("seq_bn[dropout=1.5]", "dropout=1.5 must be a probability"),
    ("par_bn[scaling=2]", "scaling=2 must be a float (e.g. 2.0)"),
    ("seq_bn[mh_adapter=1]", "mh_adapter=1 must be True or False"),
    ("seq_bn[reduction_factor=]", "cannot read 'reduction_factor=' as key=value pairs"),
    ("seq_bn[reduction_factor=8", "closing ']'"),
    ("seq_bn[reduction_factor=x]", "reduction_factor= must be a literal value"),
    ("seq_bn|lora", "combined configs"),
    ("seq_bn[use_gating=True]", "use_gating=True is not supported (gating)"),
    ("seq_bn[ln_after=True]", "ln_after=True is not supported"),
    ("lora[use_dora=True]", "use_dora=True is not supported (DoRA)"),
    ("lora[attn_matrices=['q', 'o']]", "attn_matrices=('q', 'o') must be a list among q, k, v"),
    ("seq_bn[reduction_factor={'1': 4}]", "no value for layer 0 and no 'default'"),
    ("", "expected a config string"),
])
def test_bad_config_strings_are_named_in_one_line(text, named):
    with pytest.raises(ConfigError, match=re.escape(named)) as caught:
        config = parse_adapter_config(text)
        adapter_param_shapes("bert", tiny_config("bert"), config)  # a per-layer factor is read per layer
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, BadInput)


def test_model_configs_refuse_a_bad_adapter_and_parity_names_it():
    from parity.harness import resolve_target

    with pytest.raises(ConfigError, match=r"bert config: adapter: adapter config 'lora\[rank=4\]': unknown key 'rank'"):
        tiny_config("bert", "lora[rank=4]")
    with pytest.raises(ConfigError, match="funnel config: adapter: .*unknown adapter 'nope'"):
        tiny_config("funnel", "nope")
    with pytest.raises(BadInput, match="family bilstm takes no adapters"):
        resolve_target("bilstm", tiny=True, adapter="lora")
    target = resolve_target("bert-base-uncased", tiny=True, adapter="lora[r=4]")
    assert target.label == "bert-base-uncased (tiny) + lora[r=4]" and target.config.adapter == "lora[r=4]"


# ---- names, shapes, init -------------------------------------------------------------------------------

def library_model(family_name: str, head: str, config, dtype: str = "float64"):
    """transformers' class for `head` with the adapters library's adapter `config.adapter` (our oracle code)."""
    pytest.importorskip("adapters")
    import torch
    import transformers

    from parity.oracles import TRANSFORMERS_CLASSES, add_library_adapter

    model = getattr(transformers, TRANSFORMERS_CLASSES[family_name][head])(hf_config(config))
    add_library_adapter(model, config)
    return model.to(getattr(torch, dtype)).eval()


@pytest.mark.parametrize("adapter", METHODS + VARIANTS[:2])
@pytest.mark.parametrize("family_name, head", [("bert", "base"), ("bert", "seqcls"), ("roberta", "qa")])
def test_parameter_names_are_the_library_state_dict_names(family_name, head, adapter):
    config = tiny_config(family_name, adapter)
    library = {k: tuple(v.shape) for k, v in library_model(family_name, head, config).state_dict().items()
               if is_adapter_param(k)}
    assert library == adapter_param_shapes(family_name, config, adapter, head=head)
    ours = family(family_name).param_shapes(config, head)
    assert {k: v for k, v in ours.items() if is_adapter_param(k)} == library


def test_names_on_bert_and_funnel_layers():
    config = tiny_config("bert")
    shapes = adapter_param_shapes("bert", config, "double_seq_bn[reduction_factor=4]")
    assert shapes["bert.encoder.layer.0.output.adapters.adapter.adapter_down.0.weight"] == (4, 16)
    assert shapes["bert.encoder.layer.1.attention.output.adapters.adapter.adapter_up.weight"] == (16, 4)
    lora = adapter_param_shapes("bert", config, "lora[r=4]", name="mine", head="base")
    assert set(lora) == {f"encoder.layer.{i}.attention.self.{m}.loras.mine.lora_{x}"
                         for i in range(2) for m in ("query", "value") for x in "AB"}
    assert lora["encoder.layer.0.attention.self.query.loras.mine.lora_A"] == (4, 16)
    funnel = adapter_param_shapes("funnel", tiny_config("funnel"), "seq_bn[leave_out=[1]]", head="model")
    layers = {name.split(".ffn.")[0] for name in funnel}  # layer index 1 (encoder.blocks.0.1) left out
    assert layers == {"encoder.blocks.0.0", "encoder.blocks.1.0", "encoder.blocks.1.1", "encoder.blocks.2.0",
                      "encoder.blocks.2.1", "decoder.layers.0", "decoder.layers.1"}
    assert is_adapter_param("funnel.encoder.blocks.0.0.attention.q_head.loras.adapter.lora_B")
    assert not any(is_adapter_param(n) for n in family("funnel").param_shapes(tiny_config("funnel"), "model"))


@pytest.mark.parametrize("family_name", CASES)
def test_without_adapter_the_model_is_exactly_the_old_one(family_name):
    """adapter None: the family's own parameter set and init, no `adapter` key in config.json, the same ports."""
    import importlib

    spec, (_, head) = family(family_name), CASES[family_name]
    weights = importlib.import_module(f"backends.{family_name}.weights")
    own = getattr(weights, "WEIGHTS", weights)
    config = tiny_config(family_name)
    assert config.adapter is None and "adapter" not in config.to_dict()
    assert spec.param_shapes(config, head) == own.param_shapes(config, head)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    plain, same = spec.init_params(config, head, rng_a), own.init_params(config, head, rng_b)
    assert all(np.array_equal(plain[k], same[k]) for k in same) and set(plain) == set(same)
    for fw in BACKENDS:
        model = build_model(family_name, fw, config, head, plain, dtype="float64")
        assert set(framework(fw).named_parameters(model)) == set(same)
    with_adapter = spec.param_shapes(config.replace(adapter="double_seq_bn"), head)
    assert {k: v for k, v in with_adapter.items() if not is_adapter_param(k)} == spec.param_shapes(config, head)


def test_init_as_the_library():
    """Near-identity bottlenecks (bert init: N(0, 0.02), zero biases; mam: zero up-projection), LoRA B = 0
    and A kaiming-uniform, drawn once in numpy from the seed."""
    config = tiny_config("bert").replace(hidden_size=64, num_attention_heads=2, intermediate_size=32)
    seq = adapter_init_params("bert", config, "seq_bn[reduction_factor=2]", np.random.default_rng(0))
    weights = np.concatenate([v.ravel() for k, v in seq.items() if k.endswith("weight")])
    assert abs(weights.std() - 0.02) < 0.002 and not any(v.any() for k, v in seq.items() if k.endswith("bias"))
    par = adapter_init_params("bert", config, "par_bn", np.random.default_rng(0))
    assert not any(v.any() for k, v in par.items() if "adapter_up" in k)
    down = [v for k, v in par.items() if k.endswith("adapter_down.0.weight")]
    assert all(np.abs(v).max() <= 1 / np.sqrt(64) and np.abs(v).max() > 0.8 / np.sqrt(64) for v in down)
    houlsby = adapter_init_params("bert", config, "double_seq_bn[init_weights='houlsby']", np.random.default_rng(0))
    assert all(np.abs(v).max() <= 0.02 for v in houlsby.values())
    lora = adapter_init_params("bert", config, "lora", np.random.default_rng(0))
    assert not any(v.any() for k, v in lora.items() if k.endswith("lora_B"))
    assert all(0 < np.abs(v).max() <= 1 / np.sqrt(64) for k, v in lora.items() if k.endswith("lora_A"))
    again = adapter_init_params("bert", config, "lora", np.random.default_rng(0))
    assert all(np.array_equal(lora[k], again[k]) for k in lora)
    learned = adapter_init_params("bert", config, "scaled_par_bn", np.random.default_rng(0))
    assert all(np.array_equal(v, np.ones(1)) for k, v in learned.items() if k.endswith("scaling"))


@pytest.mark.parametrize("adapter, identical", [("lora", True), ("par_bn", True), ("seq_bn", False),
                                                ("double_seq_bn", False)])
@pytest.mark.parametrize("fw", BACKENDS)
def test_at_init_the_adapted_model_is_the_base_model(fw, adapter, identical):
    """LoRA (B = 0) and par_bn (zero up-projection) start as exactly the base model; the sequential
    bottlenecks start near it (small up-projection)."""
    spec, (_, head) = family("bert"), CASES["bert"]
    config = tiny_config("bert", adapter)
    params = spec.init_params(config, head, np.random.default_rng(0))
    inputs = spec.make_inputs(config, head, 2, 9, np.random.default_rng(1))
    base = {k: v for k, v in params.items() if not is_adapter_param(k)}
    adapted = run_backend("bert", fw, config, head, params, inputs, "float64", backward=False)["logits"]
    plain = run_backend("bert", fw, config.replace(adapter=None), head, base, inputs, "float64", backward=False)
    difference = np.abs(adapted - plain["logits"]).max()
    assert (difference == 0.0) if identical else (0.0 < difference < 0.05 * np.abs(plain["logits"]).max())


# ---- parity of the ports -------------------------------------------------------------------------------

@pytest.mark.parametrize("adapter", METHODS)
@pytest.mark.parametrize("family_name", CASES)
@pytest.mark.parametrize("fw", PORTS)
def test_ports_compute_the_reference_function(fw, family_name, adapter):
    """float64: every output, hidden state and gradient (adapter parameters included) within 1e-10."""
    check_port(fw, family_name, adapter)


@pytest.mark.parametrize("adapter", VARIANTS)
@pytest.mark.parametrize("fw", PORTS)
def test_ports_compute_the_reference_function_for_other_options(fw, adapter):
    check_port(fw, "bert", adapter)


def check_port(fw: str, family_name: str, adapter: str) -> None:
    reference, result = run(family_name, adapter, "torch"), run(family_name, adapter, fw)
    # the adapter's gradients are compared too (at tiny size seq_bn's bottleneck is 1 unit wide, and its ReLU
    # may be off in a layer: VARIANTS has a wider one, where every adapter gradient is non-zero)
    adapter_grads = [k for k in reference if k.startswith("grad.") and is_adapter_param(k)]
    live = [k for k in adapter_grads if np.abs(reference[k]).max() > 0]
    assert adapter_grads and (live == adapter_grads if "reduction_factor" in adapter else live)
    assert set(reference) == set(result)
    difference, tensor = worst_difference(reference, result)
    assert difference <= TOLERANCE["float64"], f"{fw} {family_name} {adapter}: {tensor} differs by {difference:.3g}"


@pytest.mark.parametrize("family_name", ["bert", "funnel"])
@pytest.mark.parametrize("fw", BACKENDS)
def test_lora_merges_into_the_weights(fw, family_name):
    """merge_lora folds (alpha / r) B A into each adapted Linear: the same outputs from one matmul each."""
    import importlib

    layers = importlib.import_module(f"backends.adapters.layers_{fw}")
    adapter = "lora[r=4,alpha=16,attn_matrices=['q','k','v'],intermediate_lora=True,output_lora=True]"
    config, head, params, inputs = tiny_case(family_name, adapter)
    model = build_model(family_name, fw, config, head, params, dtype="float64")
    api = framework(fw)
    feed = {name: api.from_numpy(inputs[name]) for name in family(family_name).input_names(config, head)}
    output = family(family_name).final_outputs[head][0]
    before = api.to_numpy(model(**feed)[output])
    query = [k for k in params if re.search(r"(query|q_head)\.weight$", k)][0]
    weight_before = api.to_numpy(api.named_parameters(model)[query]).copy()
    layers.merge_lora(model)
    after = api.to_numpy(model(**feed)[output])
    assert not np.allclose(api.to_numpy(api.named_parameters(model)[query]), weight_before)
    assert np.abs(after - before).max() <= 1e-12 * max(1.0, np.abs(before).max())


# ---- the adapters library as oracle --------------------------------------------------------------------

ORACLE_CASES = [(f, a, d) for f in ("bert", "roberta") for a in METHODS for d in ("float64", "float32")]
ORACLE_CASES += [("bert", a, "float64") for a in VARIANTS]


@pytest.mark.parametrize("family_name, adapter, dtype", ORACLE_CASES)
def test_library_model_computes_our_function(family_name, adapter, dtype):
    """The adapters library's PyTorch model (adapters.init on transformers' class, add_adapter with the
    same config, active), loaded with our weights by name: the same outputs, hidden states, loss and
    every parameter gradient as our reference (the library's names are ours; funnel: the library has none)."""
    import torch

    spec = family(family_name)
    config, head, params, inputs = tiny_case(family_name, adapter)
    torch_dtype = getattr(torch, dtype)
    model = library_model(family_name, head, config, dtype)
    missing, unexpected = model.load_state_dict({k: torch.tensor(v, dtype=torch_dtype) for k, v in params.items()},
                                                strict=False)
    # the library's prompt-tuning module holds the word embeddings a second time (the same tensor)
    loaded = {model.state_dict()[k].data_ptr() for k in params}
    assert unexpected == [] and all(model.state_dict()[k].data_ptr() in loaded for k in missing)
    outputs = model(**{k: torch.tensor(v) for k, v in inputs.items()}, output_hidden_states=True)
    loss = sum((outputs[name] * torch.tensor(projection(name, tuple(outputs[name].shape), 0), dtype=torch_dtype)).sum()
               for name in spec.final_outputs[head])
    loss.backward()
    oracle = {"loss": loss.detach().numpy(), **{f"grad.{k}": p.grad.numpy() for k, p in model.named_parameters()}}
    oracle.update({name: outputs[name].detach().numpy() for name in spec.final_outputs[head]})
    oracle.update({f"hidden_states.{i}": t.detach().numpy() for i, t in enumerate(outputs["hidden_states"])})
    ours = run(family_name, adapter, "torch", dtype)
    assert {k for k in oracle if k.startswith("grad.")} == {k for k in ours if k.startswith("grad.")} - {
        "grad.inputs_embeds"}
    difference, tensor = worst_difference(oracle, ours, names=oracle)
    assert difference <= ORACLE_TOLERANCE[dtype], f"adapters {adapter} {dtype}: {tensor} differs by {difference:.3g}"


def test_parity_oracle_runs_the_library_for_bert_and_roberta_only():
    from parity.oracles import unsupported

    pytest.importorskip("adapters")
    assert unsupported("transformers", "bert", tiny_config("bert", "lora"), "seqcls") is None
    assert unsupported("transformers", "roberta", tiny_config("roberta", "par_bn"), "qa") is None
    assert "no funnel" in unsupported("transformers", "funnel", tiny_config("funnel", "lora"), "model")
    assert "PaddleNLP" in unsupported("paddlenlp", "bert", tiny_config("bert", "lora"), "seqcls")


def test_parity_cli_refuses_a_bad_adapter_before_any_worker():
    import subprocess
    import sys

    from ..conftest import REPO

    done = subprocess.run([sys.executable, "-m", "parity", "compare", "bert-base-uncased", "--tiny", "--adapter",
                           "seq_bn[reduction_factor=0]"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("error: bert config: adapter: adapter config 'seq_bn[reduction_factor=0]': "
                           "reduction_factor=0 must be a positive number or a mapping {layer: factor, "
                           "'default': factor}\n")
