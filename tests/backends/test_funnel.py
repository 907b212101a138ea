"""Funnel: the Paddle and TF ports against the PyTorch reference, third-party oracles, and bad input.

Every framework runs in its own child process (`python -m tests.backends.test_funnel FW JOBS OUT`):
importing paddle after tensorflow in one process segfaults, and one child per framework keeps the
start-up cost to one import each. The children run together when the first test needs a result;
each job is rebuilt in the child from its fields (seeded numpy weights and inputs) and leaves
NAME.npz or NAME.err.json, which the tests compare.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest

from backends import family, installed_frameworks
from backends._fw import ACTIVATIONS
from backends.errors import ConfigError
from backends.funnel.config import FunnelConfig
from backends.funnel.weights import HEAD_PREFIX
from backends.weights import perturb_constants

REPO = Path(__file__).resolve().parents[2]
SPEC = family("funnel")
TINY = SPEC.shrink(FunnelConfig())  # d_model 16, 2 heads of 8, blocks [2, 2, 2], 2 decoder layers
PORTS = ("paddle", "tf")
INSTALLED = installed_frameworks()
CHILD_TIMEOUT_S = 900
# oracle -> (packages it needs, the framework whose child runs it)
ORACLES = {
    "transformers": (("transformers",), "torch"),
    "transformers-tf": (("transformers", "tf_keras"), "tf"),
    "paddlenlp": (("paddlenlp",), "paddle"),
}
ORACLE_CLASSES = {"model": "FunnelModel", "base": "FunnelBaseModel", "pretraining": "FunnelForPreTraining",
                  "mlm": "FunnelForMaskedLM"}


def oracle_installed(oracle: str) -> bool:
    """Found without importing (importing would bring a framework into the pytest process)."""
    packages, fw = ORACLES[oracle]
    return fw in INSTALLED and all(importlib.util.find_spec(package) for package in packages)


@dataclass(frozen=True)
class Job:
    """One run in a framework's child; rebuilt there from these fields."""

    label: str  # the config's name: a switch or a random draw
    config_json: str
    head: str
    dtype: str = "float64"  # float64 runs backward too, float32 forward only
    seq_len: int = 11
    pad_row: bool = False  # a non-zero <pad> embedding row (paddle's padding_idx would zero its lookups)
    seed: int = 0
    kind: str = "port"  # port | oracle (named by `oracle`) | load (bad weights, `mutation`)
    oracle: str = ""
    mutation: str = ""

    @property
    def name(self) -> str:
        parts = (self.label, self.head, self.dtype, self.oracle, self.mutation)
        return "-".join(part for part in parts if part)

    @cached_property
    def config(self) -> FunnelConfig:
        return FunnelConfig.from_dict(json.loads(self.config_json))

    def arrays(self) -> tuple[dict, dict]:
        """Seeded canonical weights (no constant tensors) and inputs with padding and <cls> type 2."""
        rng = np.random.default_rng(self.seed)
        params = perturb_constants(SPEC.init_params(self.config, self.head, rng), rng)
        if self.pad_row:
            table = params[HEAD_PREFIX[self.head] + "embeddings.word_embeddings.weight"]
            table[self.config.pad_token_id] = rng.standard_normal(self.config.d_model)
        return params, SPEC.make_inputs(self.config, self.head, 2, self.seq_len, rng)


def _job(label, head, dtype="float64", seq_len=11, pad_row=False, seed=0, **changes) -> Job:
    return Job(label, TINY.replace(**changes).to_json_string(), head, dtype, seq_len, pad_row, seed)


# every config switch, each with every head
SWITCHES = {
    "default": {},
    "factorized": dict(attention_type="factorized"),
    "max_pool": dict(pooling_type="max"),
    "no_separate_cls": dict(separate_cls=False),
    "no_truncate_seq": dict(truncate_seq=False),
    "pool_kv": dict(pool_q_only=False),
    "factorized_pool_kv": dict(attention_type="factorized", pool_q_only=False, pooling_type="max", truncate_seq=False),
    "block_repeats": dict(block_repeats=[1, 2, 2]),
    "gelu": dict(hidden_act="gelu"),
    "relu": dict(hidden_act="relu"),
    "decoder0": dict(num_decoder_layers=0),
    "decoder1": dict(num_decoder_layers=1),
    "even_len": dict(seq_len=12),
    "pad_row": dict(pad_row=True),
}


# A head adds its layers over FunnelBaseModel's or FunnelModel's outputs, which the "base" and "model" heads run
# (outputs, and gradients under a random projection) with every switch; a head runs the switches that reach its
# own layers. The pretraining and MLM layers: their activation, the decoder they read, a tied <pad> embedding row.
# The task heads (a tanh classifier on the <cls> state, a linear span layer on the decoder's states): the lengths
# and the <cls> position of the states they read.
HEAD_SWITCHES = {**dict.fromkeys(("pretraining", "mlm"), ("default", "gelu", "decoder0", "pad_row")),
                 **dict.fromkeys(("seqcls", "qa", "mc"), ("default", "no_separate_cls", "no_truncate_seq", "even_len"))}


def _switch_jobs(dtype: str, heads=SPEC.heads) -> list[Job]:
    return [_job(label, head, dtype, **changes) for label, changes in SWITCHES.items() for head in heads
            if label in HEAD_SWITCHES.get(head, SWITCHES)]


def _random_jobs(count: int = 6, seed: int = 6) -> list[Job]:
    """Valid configs drawn over every switch, 1-3 blocks of 1-3 layers, sequences of 5-20 tokens; heads in turn."""
    rng = np.random.default_rng(seed)

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def draw(low, high):
        return int(rng.integers(low, high + 1))

    jobs = []
    for index in range(count):
        blocks = draw(1, 3)
        config = FunnelConfig(
            vocab_size=48, d_model=2 * draw(3, 8), n_head=draw(1, 3), d_head=draw(2, 6), d_inner=draw(8, 24),
            block_sizes=[draw(1, 3) for _ in range(blocks)], block_repeats=[draw(1, 2) for _ in range(blocks)],
            num_decoder_layers=draw(0, 2), hidden_act=pick(ACTIVATIONS), pooling_type=pick(("mean", "max")),
            attention_type=pick(("relative_shift", "factorized")), separate_cls=pick((True, False)),
            truncate_seq=pick((True, False)), pool_q_only=pick((True, False)), pad_token_id=pick((0, 7, None)),
            layer_norm_eps=pick((1e-9, 1e-5)))
        pad_row = config.pad_token_id is not None and pick((True, False))
        head = SPEC.heads[index % len(SPEC.heads)]
        jobs.append(Job(f"random{index}", config.to_json_string(), head, seq_len=draw(5, 20),
                        pad_row=pad_row, seed=index))
    return jobs


def _paddlenlp_runs(job: Job) -> bool:
    """PaddleNLP 2.8.1 fails on factorized attention (its stride_pool gets a tuple) and on
    separate_cls=False or truncate_seq=False (shape errors); its padding_idx zeroes <pad> lookups."""
    config = job.config
    return config.attention_type == "relative_shift" and config.separate_cls and config.truncate_seq and not job.pad_row


def _oracle_jobs() -> list[Job]:
    """Every switch through FunnelModel (its hidden states hold the encoder's), the default through the other
    heads the oracles have; an untied lm_head through transformers' PyTorch class only (its TF class and
    PaddleNLP's tie lm_head to the word embeddings whatever the config says)."""
    jobs = []
    for job in _switch_jobs("float32", ["model"]) + [_job("default", head, "float32") for head in ORACLE_CLASSES
                                                     if head != "model"]:
        for oracle in ORACLES:
            if oracle != "paddlenlp" or _paddlenlp_runs(job):
                jobs.append(replace(job, kind="oracle", oracle=oracle))
    return jobs + [replace(UNTIED_MLM_JOB, dtype="float32", kind="oracle", oracle="transformers")]


# mutation -> the key it breaks; every framework must refuse the weights, naming that key
BAD_WEIGHTS = {
    "missing": "encoder.blocks.0.1.attention.r_w_bias",
    "extra": "encoder.blocks.7.0.ffn.linear_1.bias",
    "transposed": "encoder.blocks.1.0.ffn.linear_1.weight",  # [in, out]: only a rule-blind loader takes it
    "short": "encoder.blocks.2.1.attention.k_head.bias",
}


def _break(params: dict, mutation: str) -> dict:
    key, params = BAD_WEIGHTS[mutation], dict(params)
    if mutation == "missing":
        del params[key]
    elif mutation == "extra":
        params[key] = np.zeros(TINY.d_model)
    elif mutation == "transposed":
        params[key] = params[key].T
    else:
        params[key] = params[key][:-1]
    return params


UNTIED_MLM_JOB = _job("untied", "mlm", tie_word_embeddings=False)
FLOAT64_JOBS = _switch_jobs("float64") + _random_jobs() + [UNTIED_MLM_JOB]
ORACLE_JOBS = _oracle_jobs()
# every switch through the heads the oracles see, every head with the default switch
FLOAT32_JOBS = (_switch_jobs("float32", ["model"]) + [_job("default", head, "float32") for head in SPEC.heads[1:]]
                + [replace(UNTIED_MLM_JOB, dtype="float32")])
LOAD_JOBS = [replace(_job("load", "model"), kind="load", mutation=mutation) for mutation in BAD_WEIGHTS]


# ---------------------------------------------------------------- child side: one framework per process

def _run_port(fw: str, job: Job) -> dict:
    from backends.run import run_backend

    params, inputs = job.arrays()
    return run_backend("funnel", fw, job.config, job.head, params, inputs, job.dtype, backward=job.dtype == "float64")


def _run_load(fw: str, job: Job) -> dict:
    from backends.build import build_model

    params, _ = job.arrays()
    build_model("funnel", fw, job.config, job.head, _break(params, job.mutation), source="test weights")
    return {}


def _oracle_outputs(output, to_numpy) -> dict:
    """last_hidden_state or logits, hidden_states.<i> and attentions.<i> of a transformers-style output."""
    from backends.run import flatten_outputs

    names = ("last_hidden_state", "logits", "hidden_states", "attentions")
    named = {name: output[name] for name in names if name in output.keys() and output[name] is not None}
    return {name: to_numpy(tensor) for name, tensor in flatten_outputs(named).items()}


def _oracle_transformers(job: Job) -> dict:
    """transformers' class of the head (PyTorch), our canonical weights loaded strictly (a tied lm_head weight,
    which is the word-embedding matrix, is the one key they do not list)."""
    import torch
    import transformers

    from backends import framework

    framework("torch").set_default_dtype("float32")
    params, inputs = job.arrays()
    model = getattr(transformers, ORACLE_CLASSES[job.head])(transformers.FunnelConfig(**job.config.to_dict())).eval()
    missing, unexpected = model.load_state_dict(
        {name: torch.from_numpy(array.astype(np.float32)) for name, array in params.items()}, strict=False)
    tied = model.get_output_embeddings() is not None and model.config.tie_word_embeddings
    assert (missing, unexpected) == (["lm_head.weight"] if tied else [], [])
    assert not tied or model.lm_head.weight is model.funnel.embeddings.word_embeddings.weight
    with torch.no_grad():
        output = model(**{name: torch.from_numpy(array) for name, array in inputs.items()},
                       output_hidden_states=True, output_attentions=True)
    return _oracle_outputs(output, lambda t: t.numpy())


KERAS_LEAVES = {"kernel": "weight", "gamma": "weight", "beta": "bias"}


def keras_to_canonical(weight_name: str, prefix: str = "") -> tuple[str, bool]:
    """`tf_funnel_model/funnel/encoder/blocks_._0_._1/attention/q_head/kernel:0` ->
    (`encoder.blocks.0.1.attention.q_head.weight`, True: a Dense kernel, stored [in, out]); the main layer's
    scope becomes the head's `prefix`, a head layer's scope stays (`lm_head/bias:0` -> `lm_head.bias`)."""
    layer, path = weight_name.split(":")[0].split("/", 2)[1:]  # drop the model's scope
    path = prefix + path if layer == "funnel" else f"{layer}/{path}"
    stem, leaf = path.replace("_._", ".").replace("/", ".").rsplit(".", 1)
    return f"{stem}.{KERAS_LEAVES.get(leaf, leaf)}", leaf == "kernel"


def _oracle_transformers_tf(job: Job) -> dict:
    """transformers' TF class of the head, every Keras weight set from a canonical one."""
    import tensorflow as tf
    import transformers

    from backends.weights import check_keys

    params, inputs = job.arrays()
    model = getattr(transformers, "TF" + ORACLE_CLASSES[job.head])(transformers.FunnelConfig(**job.config.to_dict()))
    feed = {name: tf.constant(array) for name, array in inputs.items()}
    model(feed, training=False)  # creates the weights
    loaded = set()
    for weight in model.weights:
        name, is_kernel = keras_to_canonical(weight.name, HEAD_PREFIX[job.head])
        weight.assign((params[name].T if is_kernel else params[name]).astype(np.float32))
        loaded.add(name)
    check_keys(params, loaded, "transformers-tf weights")
    output = model(feed, output_hidden_states=True, output_attentions=True, training=False)
    return _oracle_outputs(output, lambda t: t.numpy())


def _oracle_paddlenlp(job: Job) -> dict:
    """PaddleNLP's class of the head: canonical names, Linear weights [in, out] (our paddle rules). Its MLM head
    lists the tied lm_head weight as a key of its own and returns bare logits (no hidden states)."""
    import paddle
    from paddlenlp.transformers.funnel import modeling

    from backends import framework
    from backends.weights import check_keys

    framework("paddle").set_default_dtype("float32")
    params, inputs = job.arrays()
    model = getattr(modeling, ORACLE_CLASSES[job.head])(modeling.FunnelConfig(**job.config.to_dict()))
    model.eval()
    if job.head == "mlm":
        params["lm_head.weight"] = params["funnel.embeddings.word_embeddings.weight"]
    check_keys(model.state_dict(), params, "PaddleNLP weights")
    rules = SPEC.port_rules["paddle"]
    model.set_state_dict({name: rules.to_target(name, array)[1].astype(np.float32) for name, array in params.items()})
    output = model(**{name: paddle.to_tensor(array) for name, array in inputs.items()},
                   output_hidden_states=True, output_attentions=True, return_dict=True)
    return _oracle_outputs(output if hasattr(output, "keys") else {"logits": output}, lambda t: t.numpy())


ORACLE_RUNNERS = {"transformers": _oracle_transformers, "transformers-tf": _oracle_transformers_tf,
                  "paddlenlp": _oracle_paddlenlp}


def _run_oracle(fw: str, job: Job) -> dict:
    return ORACLE_RUNNERS[job.oracle](job)


RUNNERS = {"port": _run_port, "load": _run_load, "oracle": _run_oracle}


def child_main(fw: str, jobs_path: str, out_dir: str) -> int:
    """Run every job of one framework in this process; each leaves NAME.npz or NAME.err.json."""
    out = Path(out_dir)
    for fields in json.loads(Path(jobs_path).read_text()):
        job = Job(**fields)
        try:
            np.savez(out / f"{job.name}.npz", **RUNNERS[job.kind](fw, job))
        except Exception as exc:  # recorded for the test that asked for this job
            error = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
            (out / f"{job.name}.err.json").write_text(json.dumps(error))
    return 0


# ---------------------------------------------------------------- parent side: start children, compare

class Children:
    """One child process per framework, started together; a result is read when a test asks for it."""

    def __init__(self, workdir: Path, jobs: list[Job]):
        self.workdir, self.processes = workdir, {}
        for fw in INSTALLED:
            mine = [job for job in jobs
                    if job.kind != "oracle" or (ORACLES[job.oracle][1] == fw and oracle_installed(job.oracle))]
            folder = workdir / fw
            folder.mkdir()
            (folder / "jobs.json").write_text(json.dumps([asdict(job) for job in mine]))
            with open(folder / "log.txt", "w") as log:
                self.processes[fw] = subprocess.Popen(
                    [sys.executable, "-m", __name__, fw, str(folder / "jobs.json"), str(folder)],
                    cwd=REPO, env=_child_env(fw), stdout=log, stderr=subprocess.STDOUT)

    def outcome(self, fw: str, job: Job) -> tuple[dict | None, dict | None]:
        """(arrays, None) or (None, the error the job raised)."""
        if fw not in self.processes:
            pytest.skip(f"{fw} is not installed")
        code = self.processes[fw].wait(timeout=CHILD_TIMEOUT_S)
        folder = self.workdir / fw
        if (folder / f"{job.name}.err.json").exists():
            return None, json.loads((folder / f"{job.name}.err.json").read_text())
        if not (folder / f"{job.name}.npz").exists():
            log = (folder / "log.txt").read_text()[-3000:]
            raise AssertionError(f"the {fw} child (exit code {code}) left no result for {job.name}:\n{log}")
        with np.load(folder / f"{job.name}.npz") as data:
            return dict(data), None

    def result(self, fw: str, job: Job) -> dict:
        arrays, error = self.outcome(fw, job)
        if error:
            pytest.fail(f"{fw} failed on {job.name}:\n{error['traceback']}")
        return arrays

    def close(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _child_env(fw: str) -> dict:
    """One thread each (three children share the cores; tiny models only lose by threading), and
    transformers/datasets told to import no framework but the child's own."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2",
               USE_TORCH="1" if fw == "torch" else "0", USE_TF="1" if fw == "tf" else "0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def children(request, tmp_path_factory):
    """Children for the jobs of the tests selected in this module (an oracle test needs its port job too)."""
    jobs = set()
    for item in request.session.items:
        if item.module is request.module and hasattr(item, "callspec"):
            jobs.update(value for value in item.callspec.params.values() if isinstance(value, Job))
    jobs |= {replace(job, kind="port", oracle="") for job in jobs if job.kind == "oracle"}
    started = Children(tmp_path_factory.mktemp("funnel"), sorted(jobs, key=lambda job: job.name))
    yield started
    started.close()


def assert_close(got: dict, ref: dict, atol: float, label: str) -> None:
    """Same tensor names, shapes and dtypes, and every max|diff| <= atol * max(1, max|ref|) (gradients at
    a zero <pad> embedding reach 1e5: LayerNorm's eps 1e-9 is its whole variance); the message names the
    first tensor, in forward order, that differs."""
    __tracebackhide__ = True
    assert ref, f"{label}: nothing to compare"
    assert set(got) == set(ref), (f"{label}: missing {sorted(set(ref) - set(got))[:5]}, "
                                  f"unexpected {sorted(set(got) - set(ref))[:5]}")
    failures = []
    for name, expected in ref.items():
        actual = got[name]
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), (
            f"{label}: {name} is {actual.dtype}{list(actual.shape)}, "
            f"the reference {expected.dtype}{list(expected.shape)}")
        diff = float(np.max(np.abs(actual - expected), initial=0.0))
        limit = atol * max(1.0, float(np.max(np.abs(expected), initial=0.0)))
        if not diff <= limit:  # NaN fails too
            failures.append(f"{name}: max|diff| {diff:.3g} > {limit:.3g}")
    failures.sort(key=lambda failure: _forward_order(failure.split(":")[0]))
    assert not failures, f"{label}: {len(failures)} of {len(ref)} tensors differ; first {failures[0]}"


def _forward_order(name: str) -> tuple:
    """Hidden states layer by layer, then attention probs, other outputs, gradients."""
    group, _, index = name.rpartition(".")
    ranks = {"hidden_states": 0, "attentions": 1}
    if group in ranks and index.isdigit():
        return ranks[group], int(index)
    return (3 if name.startswith("grad.") else 2), 0


def _ids(job: Job) -> str:
    return job.name


@pytest.mark.parametrize("fw", PORTS)
@pytest.mark.parametrize("job", FLOAT64_JOBS, ids=_ids)
def test_float64_same_function(children, fw, job):
    """Every output, hidden state, attention prob, the loss and every gradient within 1e-10 of torch."""
    ref = children.result("torch", job)
    assert {array.dtype for array in ref.values()} == {np.dtype("float64")}
    assert sum(name.startswith("grad.") for name in ref) == len(SPEC.param_shapes(job.config, job.head)) + 1
    assert_close(children.result(fw, job), ref, 1e-10, f"{fw} vs torch, float64, {job.name}")


@pytest.mark.parametrize("fw", PORTS)
@pytest.mark.parametrize("job", FLOAT32_JOBS, ids=_ids)
def test_float32_outputs(children, fw, job):
    ref = children.result("torch", job)
    assert {array.dtype for array in ref.values()} == {np.dtype("float32")}
    assert_close(children.result(fw, job), ref, 1e-5, f"{fw} vs torch, float32, {job.name}")


@pytest.mark.oracle
@pytest.mark.parametrize("job", ORACLE_JOBS, ids=_ids)
def test_oracle(children, job):
    """Each port's float32 hidden states and attention probs against a third-party implementation."""
    if not oracle_installed(job.oracle):
        pytest.skip(f"{job.oracle} needs {', '.join(ORACLES[job.oracle][0])} and {ORACLES[job.oracle][1]}")
    expected = children.result(ORACLES[job.oracle][1], job)
    port_job = replace(job, kind="port", oracle="")
    for port in [fw for fw in ("torch",) + PORTS if fw in INSTALLED]:
        got = children.result(port, port_job)
        atol = 1e-6 if (job.oracle, port) == ("transformers", "torch") else 1e-5
        assert_close({name: got[name] for name in expected if name in got}, expected, atol,
                     f"{port} port vs {job.oracle}, {job.name}")


@pytest.mark.parametrize("fw", ("torch",) + PORTS)
@pytest.mark.parametrize("job", LOAD_JOBS, ids=_ids)
def test_bad_weights_name_the_key(children, fw, job):
    _, error = children.outcome(fw, job)
    assert error is not None, f"{fw} loaded weights with a {job.mutation} key"
    assert error["type"] == "WeightsError", error["traceback"]
    assert BAD_WEIGHTS[job.mutation] in error["message"], error["message"]


@pytest.mark.parametrize("changes, key", [
    (dict(block_sizes=[]), "block_sizes"),
    (dict(d_model=15), "d_model"),
    (dict(pooling_type="avg"), "pooling_type"),
    (dict(hidden_act="gelu_fast"), "hidden_act"),
    (dict(attention_type="absolute"), "attention_type"),
    (dict(block_sizes=[1, 1, 1], block_repeats=[1, 2]), "block_repeats"),
])
def test_bad_config_names_the_key(changes, key):
    with pytest.raises(ConfigError, match=rf"\b{key}="):
        FunnelConfig(**changes)


def test_keras_names_map_to_canonical_names():
    assert keras_to_canonical("tf_funnel_model/funnel/encoder/blocks_._0_._1/attention/q_head/kernel:0") == (
        "encoder.blocks.0.1.attention.q_head.weight", True)
    assert keras_to_canonical("tf_funnel_base_model_1/funnel/decoder/layers_._1/ffn/layer_norm/beta:0") == (
        "decoder.layers.1.ffn.layer_norm.bias", False)
    assert keras_to_canonical("tf_funnel_for_masked_lm/funnel/embeddings/word_embeddings/weight:0", "funnel.") == (
        "funnel.embeddings.word_embeddings.weight", False)
    assert keras_to_canonical("tf_funnel_for_masked_lm/lm_head/bias:0", "funnel.") == ("lm_head.bias", False)
    assert keras_to_canonical(
        "tf_funnel_for_pre_training/discriminator_predictions/dense_prediction/kernel:0", "funnel.") == (
        "discriminator_predictions.dense_prediction.weight", True)


if __name__ == "__main__":
    sys.exit(child_main(*sys.argv[1:]))
