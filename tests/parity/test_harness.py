"""Every family and preset shape at tiny size through the harness, plus a deliberately broken port."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends import FAMILIES, family, presets
from parity.harness import read_run_record, resolve_target, run_parity, run_parity_many, run_worker

from ..conftest import BACKENDS, REPO

needs_two = pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two installed backends")


def _unique_tiny_targets():
    """One target per distinct (family, tiny config, head): presets that shrink alike are one test."""
    seen = {}
    for name in sorted(presets()):
        target = resolve_target(name, tiny=True)
        key = (target.family, target.config.to_json_string(), target.head)
        seen.setdefault(key, []).append(name)
    return [names for names in seen.values()]


TINY = _unique_tiny_targets()


@pytest.fixture(scope="module")
def tiny_reports():
    """Every distinct tiny preset shape, all in one worker process per backend and dtype."""
    targets = [resolve_target(names[0], tiny=True) for names in TINY]
    return dict(zip((names[0] for names in TINY), run_parity_many(targets, BACKENDS, reference=BACKENDS[0], seq_len=9)))


@needs_two
@pytest.mark.parametrize("names", TINY, ids=lambda names: names[0])
def test_every_preset_shape_is_the_same_function(names, tiny_reports):
    """float64: every output and gradient within 1e-10; float32: as accurate as the reference."""
    report = tiny_reports[names[0]]
    assert report.passed, report.first_divergence
    kinds = {(row["backend"], row["dtype"], row["kind"]) for row in report.summary}
    assert len(kinds) == 4 * (len(BACKENDS) - 1)  # outputs and grads, both dtypes, every other backend
    # the input embeddings' gradients: "grad.inputs_embeds", or a two-part model's own (grad.question_inputs_embeds)
    assert any(r.tensor.startswith("grad.") and r.tensor.endswith("inputs_embeds") for r in report.results)


@needs_two
@pytest.mark.parametrize("family_name", FAMILIES)
def test_every_head(family_name):
    spec = family(family_name)
    preset = next(iter(spec.presets.values()))
    targets = [resolve_target(preset.name, head=head, tiny=True) for head in spec.heads]
    for head, report in zip(spec.heads, run_parity_many(targets, BACKENDS, dtypes=("float64",), seq_len=7)):
        assert report.passed, (head, report.first_divergence)


@needs_two
@pytest.mark.parametrize("reference", BACKENDS[1:])
def test_any_backend_can_be_the_reference(reference):
    """Each backend but the default as the reference of the next one (both dtypes): every backend takes both roles
    without a third backend's two workers."""
    other = BACKENDS[(BACKENDS.index(reference) + 1) % len(BACKENDS)]
    report = run_parity(resolve_target("funnel-medium", tiny=True), [reference, other], reference=reference, seq_len=8)
    assert report.passed, report.first_divergence
    assert report.reference == reference and report.backends == [other]


@pytest.mark.skipif(not {"torch", "tf"} <= set(BACKENDS), reason="needs torch and tf")
def test_broken_port_fails_and_is_localised():
    """tests/parity/broken_tf_worker.py breaks one TF layer's LayerNorm epsilon (block 1, layer 1)."""
    def runner(jobs, workdir):
        if jobs[0]["backend"] != "tf":
            return run_worker(jobs, workdir)
        path = workdir / "jobs-broken.json"
        path.write_text(json.dumps({"jobs": jobs}))
        script = Path(__file__).with_name("broken_tf_worker.py")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, str(script), str(path)], check=True, env=env, capture_output=True)
        return [read_run_record(job) for job in jobs]

    target = resolve_target("funnel-small", tiny=True)
    report = run_parity(target, ["torch", "tf"], reference="torch", dtypes=("float64",), seq_len=9, runner=runner)
    assert not report.passed
    assert report.first_divergence["layer"] == "encoder.blocks.1.1"
    assert report.first_divergence["tensor"] == "hidden_states.4"  # embeddings, 2 layers of block 0, then 1.0
    passing = {r.layer for r in report.results if r.kind == "output" and r.passed}
    assert {"embeddings", "encoder.blocks.0.0", "encoder.blocks.0.1", "encoder.blocks.1.0"} <= passing


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "parity", *args], capture_output=True, text=True, cwd=cwd)


@needs_two
def test_cli_json_plot_and_exit_codes(tmp_path):
    out_json, out_png = tmp_path / "report.json", tmp_path / "errors.png"
    done = _cli("compare", "funnel-small-base", "--tiny", "--seq-len", "8", "--backends", ",".join(BACKENDS),
                "--json", str(out_json), "--plot", str(out_png))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out_json.read_text())
    assert report["passed"] is True and report["dtype"] == "both" and report["reference"] == "torch"
    row = report["results"][0]
    assert {"backend", "tensor", "kind", "max_abs", "mean_abs", "max_rel", "noise_ratio"} <= set(row)
    # the cost breakdown: the harness's phases, and each worker's phases and own peak memory
    cost = report["cost"]
    others = [b for b in BACKENDS if b != "torch"]
    assert set(cost["phases"]["comparisons"]) == {f"{b} {d}" for b in others for d in ("float64", "float32")}
    assert cost["phases"]["files"] > 0 and cost["phases"]["waited_for_comparisons"] >= 0
    assert [(run["backend"], run["dtype"]) for run in cost["runs"]] == [
        (b, d) for b in ["torch", *others] for d in ("float64", "float32")]
    for run in cost["runs"]:
        assert list(run["phases"]) == ["start", "import", "load", "forward", "backward", "fetch", "write", "exit"]
        assert all(seconds >= 0 for seconds in run["phases"].values()) and run["phases"]["forward"] > 0
        assert sum(run["phases"][p] for p in ("import", "load", "forward", "backward", "fetch")) <= run["seconds"]
        assert 50 << 20 < run["max_rss_bytes"] < 1 << 33
        # every worker was started ahead of its turn: its framework imported, it waited (maybe 0 s) for "run"
        assert run["waited_seconds"] >= 0 and 0 < run["idle_rss_bytes"] <= run["max_rss_bytes"]
    largest = max(run["max_rss_bytes"] for run in cost["runs"])
    # at most one worker computing and the next one waiting at a time: the sampled peak is within the bound
    assert 0 < cost["sampled_peak_bytes"] <= cost["memory_ratio"] * largest
    assert "files" in done.stdout and "workers" in done.stdout  # the breakdown printed under the report
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert "PASSED" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["compare", "no-such-preset"], "unknown target"),
    (["compare", "funnel-small", "--tiny", "--backends", "torch,mxnet"], "unknown backend"),
    (["compare", "funnel-small", "--tiny", "--backends", "torch"], "nothing to compare"),
    (["compare", "funnel-small", "--tiny", "--tolerance", "bogus=1"], "--tolerance"),
    (["compare", "funnel-small", "--tiny", "--head", "nohead"], "--head"),
])
def test_cli_bad_input_exits_2(args, message):
    done = _cli(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_cli_list():
    done = _cli("list")
    assert done.returncode == 0 and "funnel-xlarge" in done.stdout


@pytest.mark.oracle
@needs_two
def test_against_transformers_oracle():
    pytest.importorskip("transformers")
    names = ("funnel-medium", "funnel-small-base")
    reports = run_parity_many([resolve_target(name, tiny=True) for name in names], BACKENDS, seq_len=10,
                              against=("transformers",))  # one worker per backend and dtype runs both
    for name, report in zip(names, reports):
        oracle = [r for r in report.results if r.backend == "transformers"]
        assert {r.tensor for r in oracle} >= {"last_hidden_state", "hidden_states.0", "attentions.0"}
        assert report.passed, (name, report.first_divergence)
        assert max(r.max_abs for r in oracle) <= 1e-5, name


@needs_two
def test_checkpoint_directory_with_transformers_init(tmp_path):
    """A transformers checkpoint (its own init: N(0,1) embeddings, zero pad row, unit norms) as TARGET."""
    transformers = pytest.importorskip("transformers")
    config = family("funnel").shrink(presets()["funnel-small"].config)
    hf_config = transformers.FunnelConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"})
    transformers.FunnelModel(hf_config).save_pretrained(tmp_path)
    target = resolve_target(str(tmp_path))
    assert (target.family, target.head) == ("funnel", "model")
    report = run_parity(target, BACKENDS, seq_len=9)
    assert report.passed, report.first_divergence


def test_directory_without_checkpoint_is_bad_input(tmp_path):
    done = _cli("compare", str(tmp_path))
    assert done.returncode == 2 and "no checkpoint found" in done.stderr
