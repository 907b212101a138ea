"""The Python API (`parity.compare`, `Report.raise_for_failure`, `parity.testing.assert_parity`), family
names as targets, and the PaddleNLP oracle."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import parity
from backends import FAMILIES, family
from backends.errors import BadInput
from parity import ParityFailure, compare
from parity.harness import max_seq_len, parameter_count, resolve_target, run_parity_many, targets
from parity.testing import assert_parity
from backends.run import run_backend

from ..conftest import BACKENDS, REPO

needs_two = pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two installed backends")
PAIR = tuple(BACKENDS[:2])


@needs_two
def test_assert_parity_passes_and_returns_the_report():
    report = assert_parity("bert", backends=PAIR, dtype="float64", tiny=True, seq_len=8)
    assert report.passed and report.target == "bert-base-uncased (tiny)" and report.dtypes == ["float64"]
    assert report.raise_for_failure() is report
    text = report.describe()
    assert text.startswith("bert-base-uncased (tiny): PASSED against torch") and f"{PAIR[1]}" in text
    assert len(text.splitlines()) == 1 + 2  # verdict, then outputs and gradients of the one other backend


@needs_two
def test_a_failing_run_raises_with_the_first_divergence():
    """float32 results of two frameworks differ by rounding: a plain bound of 0 on them must fail."""
    with pytest.raises(ParityFailure) as caught:
        assert_parity("bert-base-uncased", backends=PAIR, dtype="float32", tiny=True, seq_len=8,
                      tolerances={"float32_max_abs": 0})
    report = caught.value.report
    assert isinstance(caught.value, AssertionError) and not report.passed
    first = report.first_divergence
    assert first["backend"] == PAIR[1] and first["dtype"] == "float32"
    assert f"first divergence: {PAIR[1]} float32 {first['tensor']} (layer {first['layer']})" in str(caught.value)
    assert "FAILED" in report.describe().splitlines()[0]


def test_package_exports():
    assert parity.compare is compare and parity.ParityFailure is ParityFailure
    with pytest.raises(AttributeError):
        parity.no_such_name  # noqa: B018


@pytest.mark.parametrize("options, message", [
    (dict(seq_len=41), "--seq-len 41: bert-base-uncased (tiny) takes at most 40 positions"),
    (dict(tolerances={"float64_abs": float("nan")}), "finite number >= 0"),
    (dict(tolerances=["float64_abs=-1e-9"]), "finite number >= 0"),
    (dict(tolerances={"float64_relative": 1}), "unknown key"),
    (dict(backends=("torch", "jax")), "unknown backend 'jax'"),
    (dict(dtype="float16"), "--dtype"),
    (dict(timeout=0), "--timeout"),
    (dict(workdir="/no/such/folder"), "no such directory"),
    (dict(against="paddlenlp", head="mlm"), "PaddleNLP's bert mlm head"),
    (dict(batch=0), "--batch 0"),
])
def test_bad_input_is_refused_before_any_worker(options, message, tmp_path):
    options = {"backends": BACKENDS, "tiny": True, "seq_len": 8, "workdir": tmp_path, **options}
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        compare("bert", **options)
    assert not list(tmp_path.iterdir())


def test_family_names_are_targets_and_list_shows_exactly_them():
    for name in FAMILIES:
        target = resolve_target(name, tiny=True)
        smallest = min(family(name).presets.values(),
                       key=lambda p: parameter_count(resolve_target(p.name)))
        assert target.label == f"{smallest.name} (tiny)" and smallest.name in target.note
    assert resolve_target("funnel").label == "funnel-small-base"  # 116M parameters, the first of two equals
    listed = subprocess.run([sys.executable, "-m", "parity", "list"], capture_output=True, text=True, cwd=REPO)
    assert listed.returncode == 0
    rows = [line.split("│") for line in listed.stdout.splitlines() if line.startswith("│")]
    first_column = {row[1].strip() for row in rows} - {""}  # "": a wrapped description's next line
    assert first_column == set(targets()) and set(FAMILIES) <= first_column


@needs_two
def test_cli_compares_a_family_and_says_which_preset():
    done = subprocess.run([sys.executable, "-m", "parity", "compare", "bilstm", "--tiny", "--seq-len", "6", "--dtype",
                           "float64", "--backends", ",".join(PAIR)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bilstm is a family: running its smallest preset, bilstm-sst2" in done.stdout and "PASSED" in done.stdout


@pytest.mark.parametrize("name", ["bert-base-uncased", "roberta-base"])
def test_the_sequence_limit_is_the_position_table(name):
    """At the limit the model runs; one more position is past its table (what --seq-len refuses)."""
    target = resolve_target(name, tiny=True)
    limit = max_seq_len(target)
    spec = family(target.family)
    params = spec.init_params(target.config, target.head, np.random.default_rng(0))
    for seq_len, fits in ((limit, True), (limit + 1, False)):
        inputs = spec.make_inputs(target.config, target.head, 1, seq_len, np.random.default_rng(0))
        if fits:
            run_backend(target.family, "torch", target.config, target.head, params, inputs, "float64", backward=False)
        else:
            with pytest.raises(Exception):
                run_backend(target.family, "torch", target.config, target.head, params, inputs, "float64",
                            backward=False)


def test_funnel_declares_its_limit_and_the_bilstm_has_none():
    assert max_seq_len(resolve_target("funnel-small")) == 512
    assert max_seq_len(resolve_target("bilstm-pair")) is None


@pytest.mark.oracle
def test_against_paddlenlp_oracle():
    """PaddleNLP's classes hold our weights through the converters' PaddleNLP rules and agree in float32."""
    pytest.importorskip("paddlenlp")
    if "paddle" not in BACKENDS or "torch" not in BACKENDS:
        pytest.skip("needs torch and paddle")
    cases = [("bert-base-uncased", "base"), ("bert-base-uncased", "qa"), ("roberta-base", "mc"),
             ("funnel-small", "model"), ("funnel-small-base", "base")]
    found = [resolve_target(name, head=head, tiny=True) for name, head in cases]
    reports = run_parity_many(found, ["torch"], dtypes=("float32",), seq_len=10, against=("paddlenlp",))
    for (name, head), report in zip(cases, reports):
        oracle = [r for r in report.results if r.backend == "paddlenlp"]
        expected = set(family(report.family).final_outputs[head])
        if head in ("base", "model"):
            expected |= {"hidden_states.0", "attentions.0"}
        assert {r.tensor for r in oracle} >= expected, (name, head)
        assert report.passed, (name, head, report.first_divergence)
        assert max(r.max_abs for r in oracle) <= 1e-5, (name, head)


def test_tiny_with_a_checkpoint_directory_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="--tiny shrinks a preset"):
        compare(tmp_path, tiny=True)
