"""The framework contract (backends/_fw/contract.py) over the registry (backends/_fw/__init__.py).

Every registered framework has its package, its ports and its port rules; every installed one implements
every member of the contract with the contract's parameters, and each function agrees with the torch
adapter in float64 on small seeded inputs.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import backends
from backends import FAMILIES, family, framework, installed_frameworks, preset
from backends._fw import ACTIVATIONS, CANONICAL_LINEAR_KERNEL, FRAMEWORKS, IN_OUT, OUT_IN, contract
from backends.build import build_model, canonical_grads
from tasks.train import runner_class, step_module

from ..conftest import BACKENDS

REFERENCE = "torch"
CANDIDATES = [fw for fw in BACKENDS if fw != REFERENCE]
FW_ROOT = Path(backends.__file__).parent / "_fw"
needs_reference = pytest.mark.skipif(REFERENCE not in BACKENDS, reason="needs torch, the reference adapter")


# ---- the registry --------------------------------------------------------------------------------------


def test_registry_is_the_one_list():
    from tasks.__main__ import BACKENDS as CLI_BACKENDS

    assert tuple(FRAMEWORKS) == backends.FRAMEWORKS == CLI_BACKENDS
    assert installed_frameworks() == BACKENDS == [fw for fw in FRAMEWORKS if fw in BACKENDS]  # registry order
    packages = sorted(p.name for p in FW_ROOT.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(FRAMEWORKS)  # one folder per framework, named by its key
    for key, fw in FRAMEWORKS.items():
        assert fw.key == key and fw.linear_kernel in (OUT_IN, IN_OUT)
        assert (FW_ROOT / key / "train.py").is_file()
    for name in FAMILIES:
        assert set(family(name).port_rules) == set(FRAMEWORKS), name
        for key in FRAMEWORKS:
            assert (FW_ROOT.parent / name / f"modeling_{key}.py").is_file(), (name, key)
    with pytest.raises(KeyError, match="unknown framework 'tensorflow'"):
        framework("tensorflow")
    with pytest.raises(KeyError, match="unknown backend 'tensorflow'"):
        step_module("tensorflow")


# ---- every member, with the contract's parameters --------------------------------------------------------


def missing_members(protocol, implementation) -> list[str]:
    """What `implementation` lacks or declares with other parameters than `protocol`."""
    problems = []
    for name, expected in contract.members(protocol).items():
        found = getattr(implementation, name, None)
        if not callable(found):
            problems.append(f"{name}: missing")
            continue
        try:
            signature = inspect.signature(found)
        except ValueError:  # a builtin (torch.tanh): only its presence can be checked
            continue
        parameters = list(signature.parameters.values())
        if inspect.isclass(implementation):
            parameters = parameters[1:]  # self
        got = [(p.name, p.default) for p in parameters]
        want = [(p.name, p.default) for p in expected.parameters.values()]
        if got != want:
            problems.append(f"{name}{signature}: the contract says {name}{expected}")
    return problems


@pytest.mark.parametrize("fw", BACKENDS)
def test_every_member_is_implemented(fw):
    assert missing_members(contract.Adapter, framework(fw)) == []
    assert missing_members(contract.TrainOps, step_module(fw)) == []
    assert missing_members(contract.Runner, runner_class(fw)) == []
    runner = runner_class(fw)("bert", tiny_config(), "seqcls", dtype="float64")
    assert all(hasattr(runner, name) for name in contract.attributes(contract.Runner))


@pytest.mark.skipif(not BACKENDS, reason="needs a framework")
def test_missing_members_catches_a_wrong_signature():
    adapter = framework(BACKENDS[0])
    broken = SimpleNamespace(**{**vars(adapter), "dot": lambda tensor: tensor})
    del broken.tanh
    assert [p.split("(")[0].split(":")[0] for p in missing_members(contract.Adapter, broken)] == ["dot", "tanh"]


# ---- the same values as the torch adapter, in float64 -----------------------------------------------------


def tiny_config():
    return family("bert").shrink(preset("bert-base-uncased").config)


def elementwise_cases(adapter, ops) -> dict:
    """name -> numpy result of one contract function on seeded float64 inputs."""
    rng = np.random.default_rng(0)
    x, y = 3 * rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    labels = rng.integers(0, 5, 4)
    masked_labels = np.array([[1, -100], [-100, 3]])  # masked-LM labels: -100 where a position is not scored
    t = adapter.from_numpy
    out = adapter.to_numpy
    cases = {
        "from_numpy/to_numpy": out(t(x)),
        "from_numpy(dtype)": out(t(x, "float32")),
        "from_numpy(int)": out(t(labels)),
        "dot": out(adapter.dot(t(x), y)),
        "tanh": out(adapter.tanh(t(x))),
        "sigmoid": out(adapter.sigmoid(t(x))),
        "in_float64(float64)": out(adapter.in_float64(adapter.sigmoid)(t(x))),
        "cross_entropy": out(ops.cross_entropy(t(x), t(labels))),
        "masked_cross_entropy": out(ops.masked_cross_entropy(t(x.reshape(2, 2, 5)), t(masked_labels))),
        "masked_cross_entropy(none)": out(ops.masked_cross_entropy(t(x.reshape(2, 2, 5)), t(np.full((2, 2), -100)))),
        "mse": out(ops.mse(t(x), t(y.astype(np.float32)))),
        "log_softmax": out(ops.log_softmax(t(x))),
        "softmax": out(ops.softmax(t(x))),
        "sum_last": out(ops.sum_last(t(x))),
        "mean": out(ops.mean(t(x))),
        "zero_where_below": out(ops.zero_where_below(t(x), 0.5)),
    }
    cases.update({f"activation({name})": out(adapter.activation(name)(t(x))) for name in ACTIVATIONS})
    return cases


def assert_same(candidate: dict, reference: dict, scale: float) -> None:
    """The float64 parity rule: |diff| <= scale * max(1, max|reference|), dtype and shape kept, per entry."""
    assert candidate.keys() == reference.keys()
    for name, want in reference.items():
        got = np.asarray(candidate[name])
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
        bound = scale * max(1.0, float(np.max(np.abs(want), initial=0.0)))
        assert np.max(np.abs(got - want), initial=0.0) <= bound, name


@needs_reference
@pytest.mark.parametrize("fw", CANDIDATES)
def test_functions_agree_with_torch(fw):
    reference = elementwise_cases(framework(REFERENCE), step_module(REFERENCE))
    assert_same(elementwise_cases(framework(fw), step_module(fw)), reference, 1e-12)


@needs_reference
@pytest.mark.parametrize("name", ["sigmoid", "mse", "activation(gelu)"])
def test_a_wrong_function_is_caught(name):
    """The comparison fails for one function with the wrong sign (the candidate: torch's own adapter)."""
    adapter, ops = reference_adapter, reference_ops = framework(REFERENCE), step_module(REFERENCE)
    reference = elementwise_cases(adapter, ops)
    if name == "mse":
        ops = SimpleNamespace(**{**vars(ops), "mse": lambda a, b: -reference_ops.mse(a, b)})
    elif name == "sigmoid":
        adapter = SimpleNamespace(**{**vars(adapter), "sigmoid": lambda x: -reference_adapter.sigmoid(x)})
    else:
        def activation(n):
            fn = reference_adapter.activation(n)
            return (lambda x: -fn(x)) if n == "gelu" else fn
        adapter = SimpleNamespace(**{**vars(adapter), "activation": activation})
    with pytest.raises(AssertionError, match=name.replace("(", r"\(").replace(")", r"\)")):
        assert_same(elementwise_cases(adapter, ops), reference, 1e-12)


@needs_reference
@pytest.mark.parametrize("fw", BACKENDS)
def test_in_float64_rounds_the_float64_value(fw):
    """A float32 input: fn computed in float64, rounded once (within one float32 ulp of torch's)."""
    adapter, torch_adapter = framework(fw), framework(REFERENCE)
    x = (3 * np.random.default_rng(1).standard_normal(1000)).astype(np.float32)
    for fn in ("tanh", "sigmoid"):
        got = adapter.to_numpy(adapter.in_float64(getattr(adapter, fn))(adapter.from_numpy(x)))
        exact = torch_adapter.to_numpy(getattr(torch_adapter, fn)(torch_adapter.from_numpy(x, "float64")))
        assert got.dtype == np.float32
        np.testing.assert_array_max_ulp(got, exact.astype(np.float32), maxulp=1)


def test_paddle_gelu_tanh_rounds_the_float64_value_and_gradient():
    """paddle's float32 gelu(approximate=True) is evaluated in float64 (its float32 kernel's backward is 3.6x as far
    from the truth as torch's): value and gradient within one float32 ulp of the float64 ones."""
    paddle = pytest.importorskip("paddle")
    adapter = framework("paddle")
    rng = np.random.default_rng(1)
    x, cotangent = (3 * rng.standard_normal(4000)).astype(np.float32), rng.standard_normal(4000).astype(np.float32)
    for name in ("gelu_new", "gelu_pytorch_tanh"):
        results = {}
        for dtype in ("float32", "float64"):
            tensor = paddle.to_tensor(x.astype(dtype), stop_gradient=False)
            value = adapter.activation(name)(tensor)
            (value * paddle.to_tensor(cotangent.astype(dtype))).sum().backward()
            results[dtype] = (value.numpy(), tensor.grad.numpy())
        for got, exact in zip(results["float32"], results["float64"]):
            assert got.dtype == np.float32
            np.testing.assert_array_max_ulp(got, exact.astype(np.float32), maxulp=1)


def model_run(fw: str) -> dict:
    """A tiny BERT classifier in float64 through the adapter alone: parameters, value_and_grads, no_grad."""
    adapter = framework(fw)
    spec, config = family("bert"), tiny_config()
    inputs = spec.make_inputs(config, "seqcls", 2, 6, np.random.default_rng(2))
    model = build_model("bert", fw, config, "seqcls", dtype="float64", seed=3)
    adapter.set_default_dtype("float32")
    params = adapter.named_parameters(model)
    kernel = params["classifier.weight"]
    canonical = (config.num_labels, config.hidden_size)
    layout = FRAMEWORKS[fw].linear_kernel
    assert adapter.shape(kernel) == (canonical if layout == CANONICAL_LINEAR_KERNEL else canonical[::-1])
    adapter.assign(kernel, adapter.to_numpy(kernel) * 2)  # the classifier gets a visible gradient share
    tensors = {name: adapter.from_numpy(array) for name, array in inputs.items()}
    weights = np.random.default_rng(4).standard_normal((2, config.num_labels))

    def forward():
        embeds = model.get_input_embeddings()(tensors["input_ids"])
        outputs = model(**tensors, inputs_embeds=embeds)
        return adapter.dot(outputs["logits"], weights), outputs, {"embeds": embeds}

    loss, outputs, grads, watched = adapter.value_and_grads(model, forward)
    with adapter.no_grad():
        _, again, _ = forward()
    return {"loss": adapter.to_numpy(loss).reshape(()), "logits": adapter.to_numpy(outputs["logits"]),
            "no_grad logits": adapter.to_numpy(again["logits"]), "grad embeds": adapter.to_numpy(watched["embeds"]),
            "param dtype": adapter.to_numpy(kernel).dtype,
            **{f"grad {name}": g for name, g in canonical_grads(grads, "bert", fw).items()}}


@needs_reference
@pytest.mark.parametrize("fw", CANDIDATES)
def test_model_functions_agree_with_torch(fw):
    run, reference = model_run(fw), model_run(REFERENCE)
    assert run.pop("param dtype") == reference.pop("param dtype") == np.float64
    assert len([name for name in run if name.startswith("grad ")]) > 10
    assert_same(run, reference, 1e-10)
