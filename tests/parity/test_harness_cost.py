"""The harness's own cost: the streamed comparison gives the whole-array numbers, comparisons overlap the
next backend's run without changing results or their order, and the report's per-phase breakdown."""
from __future__ import annotations

import math

import numpy as np
import pytest

import parity.harness as harness
from backends.tensorfile import SafetensorsReader, save_arrays
from parity.harness import RunRecord, compare_files, resolve_target, run_parity
from parity.tolerances import Tolerances


def _whole_array_numbers(value, base, truth=None):
    """What the comparison computed before it streamed: whole arrays in float64, numpy's mean."""
    c, r = value.astype(np.float64), base.astype(np.float64)
    diff = np.abs(c - r)
    max_abs, scale = float(np.max(diff)), float(np.max(np.abs(r)))
    numbers = [max_abs, float(np.mean(diff)), max_abs / scale, scale]
    if truth is not None:
        truth_rms = math.sqrt(float(np.mean(np.square(truth))))
        numbers += [float(np.sqrt(np.mean((c - truth) ** 2))) / truth_rms,
                    float(np.sqrt(np.mean((r - truth) ** 2))) / truth_rms]
    return numbers


def _numbers(result):
    numbers = [result.max_abs, result.mean_abs, result.max_rel, result.scale]
    return numbers + ([result.relative_error, result.reference_relative_error] if result.dtype == "float32" else [])


@pytest.mark.parametrize("chunk", [harness.CHUNK_ELEMENTS, 97])
def test_streamed_comparison_equals_whole_arrays(tmp_path, monkeypatch, chunk):
    """One chunk: bit for bit the whole-array numbers; many chunks (97 values): the maxima exactly, the means
    and rms errors within rounding of the sums."""
    monkeypatch.setattr(harness, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(3)
    truth = {"hidden_states.0": rng.standard_normal((3, 37, 11)), "loss": np.asarray(rng.standard_normal()),
             "grad.w": rng.standard_normal((53, 29)), "grad.empty": np.zeros((0, 4))}
    ref32 = {n: (t * (1 + 1e-7 * rng.standard_normal(t.shape))).astype(np.float32) for n, t in truth.items()}
    cand32 = {n: (t * (1 + 2e-7 * rng.standard_normal(t.shape))).astype(np.float32) for n, t in truth.items()}
    cand64 = {n: t + 1e-13 * rng.standard_normal(t.shape) for n, t in truth.items()}
    paths = {}
    for key, arrays in {"ref64": truth, "ref32": ref32, "cand32": cand32, "cand64": cand64}.items():
        paths[key] = tmp_path / f"{key}.safetensors"
        save_arrays(paths[key], arrays)
    reader = SafetensorsReader(paths["ref64"])
    assert np.array_equal(np.concatenate(list(reader.chunks("grad.w", 97))), truth["grad.w"].ravel())

    hidden = ["embeddings"]
    found64 = compare_files(paths["ref64"], paths["cand64"], "paddle", "float64", hidden, Tolerances())
    found32 = compare_files(paths["ref64"], paths["cand32"], "paddle", "float32", hidden, Tolerances(),
                            reference32_path=paths["ref32"])
    assert [r.tensor for r in found64] == ["hidden_states.0", "loss", "grad.w", "grad.empty"]
    for result in found64 + found32:
        if result.tensor == "grad.empty":
            assert _numbers(result)[:4] == [0.0, 0.0, 0.0, 0.0] and result.passed
            continue
        value = (cand64 if result.dtype == "float64" else cand32)[result.tensor]
        base = truth[result.tensor] if result.dtype == "float64" else ref32[result.tensor]
        expected = _whole_array_numbers(value, base, truth[result.tensor] if result.dtype == "float32" else None)
        got = _numbers(result)
        if value.size <= chunk:
            assert got == expected, result.tensor
        else:
            assert got[0] == expected[0] and got[2:4] == expected[2:4], result.tensor
            assert got == pytest.approx(expected, rel=1e-12, abs=0), result.tensor
        assert result.passed


def test_a_non_finite_or_reshaped_result_is_caught_when_streamed(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "CHUNK_ELEMENTS", 5)
    reference = {"hidden_states.0": np.ones((4, 6)), "grad.w": np.ones((3, 3))}
    candidate = {"hidden_states.0": np.ones((4, 6)), "grad.w": np.ones((3, 3))}
    candidate["hidden_states.0"][3, 5] = np.nan  # in the last chunk
    save_arrays(tmp_path / "ref.safetensors", reference)
    save_arrays(tmp_path / "cand.safetensors", candidate)
    results = compare_files(tmp_path / "ref.safetensors", tmp_path / "cand.safetensors", "tf", "float64", [],
                            Tolerances())
    nan_result = next(r for r in results if r.tensor == "hidden_states.0")
    assert nan_result.max_abs == math.inf and nan_result.mean_abs == math.inf and not nan_result.passed
    save_arrays(tmp_path / "cand.safetensors", {**candidate, "grad.w": np.ones(9)})
    with pytest.raises(ValueError, match=r"shape \(9,\) vs reference \(3, 3\)"):
        compare_files(tmp_path / "ref.safetensors", tmp_path / "cand.safetensors", "tf", "float64", [], Tolerances())


class FakeRunner:
    """Writes results as a backend would, without a framework: the reference's values, a candidate's off by
    one rounding step, float32 by casting; `missing` drops a tensor from one backend and dtype's results."""

    def __init__(self, missing=None):
        self.calls, self.missing = [], missing
        rng = np.random.default_rng(0)
        self.truth = {"hidden_states.0": rng.standard_normal((2, 5, 4)), "last_hidden_state": rng.standard_normal((2, 5, 4)),
                      "loss": np.asarray(1.5), "grad.w": rng.standard_normal((6, 4)),
                      "grad.inputs_embeds": rng.standard_normal((2, 5, 4))}

    def __call__(self, jobs, workdir):
        records = []
        for job in jobs:
            self.calls.append((job["backend"], job["dtype"]))
            step = 0 if job["backend"] == "torch" else 1
            arrays = {n: np.nextafter(t, np.inf) if step else t for n, t in self.truth.items()}
            if job["dtype"] == "float32":
                arrays = {n: a.astype(np.float32) for n, a in arrays.items()}
            if self.missing == (job["backend"], job["dtype"]):
                arrays.pop("grad.w")
            save_arrays(job["output"], arrays)
            records.append(RunRecord(job["backend"], job["dtype"], 1.0, 1 << 20, {"load": 0.5}))
        return records


def test_overlapped_comparisons_keep_the_order_and_the_numbers(tmp_path):
    runner = FakeRunner()
    target = resolve_target("funnel-small", tiny=True)
    report = run_parity(target, ["torch", "paddle", "tf"], runner=runner, seq_len=8, workdir=str(tmp_path))
    assert runner.calls == [("torch", "float64"), ("torch", "float32"), ("paddle", "float64"), ("paddle", "float32"),
                            ("tf", "float64"), ("tf", "float32")]
    assert report.passed, report.first_divergence
    groups = [(r.backend, r.dtype) for r in report.results]
    assert sorted(set(groups), key=groups.index) == runner.calls[2:]  # results in the order the backends ran
    assert all(r.max_abs > 0 for r in report.results if r.dtype == "float64")  # one rounding step off
    assert set(report.phases["comparisons"]) == {"paddle float64", "paddle float32", "tf float64", "tf float32"}
    assert report.phases["files"] > 0 and report.phases["waited_for_comparisons"] >= 0
    assert not list(tmp_path.iterdir())  # the run's folder is removed


def test_a_failing_comparison_fails_the_run_and_cleans_up(tmp_path):
    runner = FakeRunner(missing=("paddle", "float64"))
    with pytest.raises(ValueError, match=r"paddle: results differ in names: missing \['grad.w'\]"):
        run_parity(resolve_target("funnel-small", tiny=True), ["torch", "paddle", "tf"], runner=runner, seq_len=8,
                   workdir=str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_the_next_worker_starts_while_the_current_one_runs(monkeypatch, tmp_path):
    """AheadRunner (the default runner): worker i+1 is started once worker i is told to run, never two run at
    once, and a worker started ahead whose turn never comes is closed."""
    events = []

    class Worker:
        def __init__(self, jobs, workdir):
            self.name = jobs[0]["output"]

        def start(self):
            events.append(("start", self.name))

        def run(self, timeout=None, stall_seconds=None, then=None):
            events.append(("run", self.name))
            if then:
                then()
            events.append(("done", self.name))
            return []

        def close(self):
            events.append(("close", self.name))

    monkeypatch.setattr(harness, "WorkerProcess", Worker)
    plan = [[{"output": name}] for name in ("a", "b", "c")]
    runner = harness.AheadRunner(plan, timeout=None)
    runner(plan[0], tmp_path)
    runner(plan[1], tmp_path)
    runner.close()
    assert events == [("run", "a"), ("start", "b"), ("done", "a"), ("run", "b"), ("start", "c"), ("done", "b"),
                      ("close", "c")]
