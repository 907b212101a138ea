"""Data-parallel training (backends/_fw/parallel.py): N processes compute what one process computes.

Each backend's launcher (torchrun, paddle.distributed.launch, tasks.train.tf_launch) starts two processes
of tests/tasks/data_parallel_worker.py; the one-process reference runs here. Also: the dropout masks of a
shard equal the whole batch's rows, the launch environment's errors, resuming on another process count,
and a process that dies mid-run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from backends._fw.dropout import MaskStream
from backends._fw.parallel import CollectiveFailed, LaunchError, Layout, launched, layout
from backends.tensorfile import SafetensorsReader
from tasks.train import job as job_module
from tasks.train.loop import ResumeError, Trainer, TrainArgs, check_settings, latest_checkpoint, predict_all
from tasks.train.losses import LOSSES
from tasks.train.tf_launch import free_ports

from ..conftest import REPO
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import (make_runner, max_weight_diff, seeded_data, tiny_config, write_glue,
                                 write_model_folder)

pytestmark = pytest.mark.usefixtures("one_thread")
# per process 4 rows, accumulation 2: 16 examples per update; 29 rows leave a short last micro-batch of 5,
# which the two processes split 3 + 2
SETTINGS = {"batch_size": 4, "grad_accum": 2, "max_steps": 20, "learning_rate": 1e-3, "warmup_ratio": 0.1,
            "weight_decay": 0.01, "save_steps": 10, "seed": 3}
ROWS, EVAL_BATCH = 29, 6
LAUNCH_TIMEOUT = 600  # seconds for two processes to import a framework and train, on 2 busy cores
COLLECTIVE_TIMEOUT = 120


def launcher(backend: str, module: list[str], nproc: int = 2) -> list[str]:
    """The documented launch command of `backend` for `python -m MODULE ARGS`."""
    if backend == "torch":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
                *module]
    if backend == "paddle":
        return [sys.executable, "-m", "paddle.distributed.launch", f"--nproc_per_node={nproc}", sys.executable, "-m",
                *module]
    return [sys.executable, "-m", "tasks.train.tf_launch", "--nproc-per-node", str(nproc), "-m", *module]


def child_environment() -> dict:
    """This test's environment without any launcher's variables, one thread per process."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "TF_CONFIG", "PADDLE_TRAINER_ID", "PADDLE_TRAINERS_NUM")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def reference(backend: str, dtype: str, output_dir, resume=None):
    """One process over the micro-batches two processes of SETTINGS share (batch_size x 2)."""
    config = tiny_config("bert", dropout=True)
    data = seeded_data("bert", config, "seqcls", rows=ROWS)
    runner = make_runner(backend, "bert", config, "seqcls", dtype)
    args = TrainArgs(**{**SETTINGS, "batch_size": 2 * SETTINGS["batch_size"]}, progress=False)
    trainer = Trainer(runner, args, data, LOSSES["classification"], output_dir)
    trainer.train(resume)
    return runner, data


def read(path) -> dict:
    return dict(SafetensorsReader(path))


def test_two_processes_train_and_evaluate_as_one(backend, tmp_path):
    """float64: the same weights after 20 updates (<= 1e-8; dropout on, a short last batch split unevenly);
    float32: apart by no more than float32's own rounding (its distance from float64); the gathered
    predictions and their accuracy equal one process's; each resumes the other's checkpoint (float64)."""
    dtypes = ("float64", "float32")
    single = {}
    for dtype in dtypes:
        runner, data = reference(backend, dtype, tmp_path / "one" / dtype)
        single[dtype] = runner.get_params(), predict_all(runner, data, EVAL_BATCH)
    job = {"backend": backend, "family": "bert", "rows": ROWS, "settings": SETTINGS, "dtypes": dtypes,
           "eval_batch_size": EVAL_BATCH, "output_dir": str(tmp_path / "two"), "timeout": COLLECTIVE_TIMEOUT,
           "resume": {"float64": str(tmp_path / "one" / "float64" / "checkpoint-10")}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    done = subprocess.run(launcher(backend, ["tests.tasks.data_parallel_worker", str(tmp_path / "job.json")]),
                          cwd=tmp_path, env=child_environment(), capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # closing the group ends its collective threads (torch's gloo names them gloo_tcp_loop, pt_gloo_runloop):
    # left to interpreter exit, they now and then abort a finished run
    for rank in range(2):
        threads = json.loads((tmp_path / "two" / f"threads-after-close-{rank}.json").read_text())
        assert [name for name in threads if "gloo" in name] == [], f"rank {rank}: threads after closing the group"
    two = {dtype: tmp_path / "two" / dtype for dtype in dtypes}
    labels = seeded_data("bert", tiny_config("bert", dropout=True), "seqcls", rows=ROWS)["labels"]
    for dtype in dtypes:
        weights, predictions = read(two[dtype] / "final.safetensors"), read(two[dtype] / "predictions.safetensors")
        gathered, logits = predictions["logits"], single[dtype][1]["logits"]
        assert gathered.shape == logits.shape
        assert (gathered.argmax(-1) == labels).mean() == (logits.argmax(-1) == labels).mean()
        if dtype == "float64":
            assert max_weight_diff(weights, single[dtype][0]) <= 1e-8
            assert max_weight_diff(read(two[dtype] / "resumed.safetensors"), single[dtype][0]) <= 1e-8
            np.testing.assert_allclose(gathered, logits, rtol=0, atol=1e-12)
        else:  # data-parallel float32 is no further from one float32 process than float32 is from float64
            rounding = max_weight_diff(single["float32"][0], single["float64"][0])
            assert max_weight_diff(weights, single[dtype][0]) <= rounding
            np.testing.assert_allclose(gathered, logits, rtol=0, atol=1e-5)
    # the two processes' checkpoint (written once, by rank 0) resumed by one process
    assert sorted(p.name for p in (tmp_path / "two" / "float64").iterdir() if p.name.startswith("checkpoint")) == \
        ["checkpoint-10", "checkpoint-20"]
    resumed, _ = reference(backend, "float64", tmp_path / "two" / "float64", resume=two["float64"] / "checkpoint-10")
    assert max_weight_diff(resumed.get_params(), single["float64"][0]) <= 1e-8


# ---- the dropout masks of a shard ----------------------------------------------------------------------


def test_a_shard_draws_the_rows_of_the_whole_batch():
    whole = MaskStream(0)
    whole.reseed(5, np.arange(8))  # the driver names the rows of one process too
    parts = [MaskStream(0) for _ in range(3)]
    shards = [Layout(rank, 3).rows(8) for rank in range(3)]
    for part, rows in zip(parts, shards):
        part.reseed(5, rows)
    for shape in ((8, 6, 4), (16, 3), (7, 5)):  # batch-led; two rows per example (multiple choice); batch-free
        batch_free = shape[0] == 7
        expected = whole.mask(shape, 0.3, batch_free=batch_free)
        if batch_free:
            for part in parts:
                np.testing.assert_array_equal(part.mask(shape, 0.3, batch_free=True), expected)
            continue
        per = shape[0] // 8
        got = [part.mask((len(rows) * per,) + shape[1:], 0.3) for part, rows in zip(parts, shards)]
        np.testing.assert_array_equal(np.concatenate(got), expected)
    with pytest.raises(ValueError, match=r"first axis is not a multiple of the 3 examples.*BATCH_FREE"):
        parts[0].mask((4, 2), 0.3)


@pytest.mark.parametrize("family_name", ["bert", "funnel"])
def test_two_halves_of_a_batch_give_the_whole_batch_outputs(backend, family_name):
    """Training-mode outputs with every dropout layer on (Funnel's position tables have no batch axis): the two
    halves, each seeded with its rows, give the rows of the whole batch."""
    config = tiny_config(family_name, dropout=True)
    batch = seeded_data(family_name, config, "seqcls", rows=6)
    runner = make_runner(backend, family_name, config, "seqcls", "float64")

    def logits(rows, seed=11):
        runner.seed(seed, rows)
        out = runner.forward(runner.to_tensors({k: v[rows] for k, v in batch.items()}), train=True)["logits"]
        return np.asarray(out.detach() if hasattr(out, "detach") else out)

    whole = logits(np.arange(6))
    np.testing.assert_allclose(np.concatenate([logits(Layout(r, 2).rows(6)) for r in range(2)]), whole,
                               rtol=0, atol=1e-12)
    assert np.max(np.abs(logits(np.arange(6), seed=12) - whole)) > 1e-6  # another seed, other masks: dropout is on


# ---- the launch environment ------------------------------------------------------------------------------


def test_launch_environment():
    assert layout("torch", {}) == Layout(0, 1)
    assert layout("torch", {"RANK": "1", "WORLD_SIZE": "2"}) == Layout(1, 2)
    assert layout("paddle", {"PADDLE_TRAINER_ID": "2", "PADDLE_TRAINERS_NUM": "3"}) == Layout(2, 3)
    tf_config = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 1}}
    assert layout("tf", {"TF_CONFIG": json.dumps(tf_config)}) == Layout(2, 3)
    assert launched({"RANK": "0", "WORLD_SIZE": "1"}) == {"torch": Layout(0, 1)}
    errors = {
        "torchrun started 2 processes, but --backend tf is launched with TF_CONFIG":
            ("tf", {"RANK": "0", "WORLD_SIZE": "2"}),
        r"TF_CONFIG started 2 processes, but --backend torch is launched with torchrun":
            ("torch", {"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                                                "task": {"type": "worker", "index": 0}})}),
        "RANK=2 is not a rank of WORLD_SIZE=2": ("torch", {"RANK": "2", "WORLD_SIZE": "2"}),
        "WORLD_SIZE='two' is not an integer": ("torch", {"RANK": "0", "WORLD_SIZE": "two"}),
        "TF_CONFIG is not a cluster and task": ("tf", {"TF_CONFIG": "{not json"}),
        "chief and worker tasks only, not ps": ("tf", {"TF_CONFIG": json.dumps(
            {"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", "index": 0}})}),
        "task worker 3 is not in the cluster's 1 workers": ("tf", {"TF_CONFIG": json.dumps(
            {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}})}),
    }
    for message, (backend, environ) in errors.items():
        with pytest.raises(LaunchError, match=message):
            layout(backend, environ)


# ---- resuming on another process count ---------------------------------------------------------------------


def test_resume_names_the_batch_size_of_another_process_count(backend, tmp_path):
    """A checkpoint of 16 examples per update: 4 processes x 2 accumulation need --batch-size 2; 3 processes
    cannot split it (the examples per update are not a multiple of processes x accumulation)."""
    config = tiny_config("bert")
    data = seeded_data("bert", config, "seqcls", rows=ROWS)
    runner = make_runner(backend, "bert", config, "seqcls", "float64")
    args = TrainArgs(**{**SETTINGS, "max_steps": 10, "batch_size": 8}, progress=False)
    Trainer(runner, args, data, LOSSES["classification"], tmp_path).train()
    saved = json.loads((latest_checkpoint(tmp_path) / "trainer_state.json").read_text())["settings"]
    assert saved["global_batch_size"] == 16 and saved["processes"] == 1
    for processes, batch_size, message in ((4, 4, r"global_batch_size \(16 there, 32 now.*give --batch-size 2$"),
                                           (3, 3, r"3 processes x --grad-accum 2 cannot split 16 evenly: resume on "
                                                  "a process count that divides 8")):
        other = TrainArgs(**{**SETTINGS, "max_steps": 10, "batch_size": batch_size}, processes=processes)
        with pytest.raises(ResumeError, match=message):
            check_settings(tmp_path, saved, other, ROWS)
    check_settings(tmp_path, saved, TrainArgs(**{**SETTINGS, "max_steps": 10, "batch_size": 2}, processes=4), ROWS)
    old = {key: value for key, value in saved.items() if key not in ("global_batch_size", "processes")}
    check_settings(tmp_path, old, TrainArgs(**{**SETTINGS, "max_steps": 10}, processes=2), ROWS)  # before this


# ---- a process that dies ----------------------------------------------------------------------------------------


def launch_environment(backend: str, rank: int, size: int, ports: list[int]) -> dict:
    """What each framework's launcher sets for process `rank` of `size` on this host."""
    if backend == "torch":
        return {"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(size),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(ports[0])}
    if backend == "paddle":
        endpoints = [f"127.0.0.1:{port}" for port in ports[1:size + 1]]
        return {"PADDLE_TRAINER_ID": str(rank), "PADDLE_TRAINERS_NUM": str(size), "PADDLE_GLOBAL_RANK": str(rank),
                "PADDLE_GLOBAL_SIZE": str(size), "PADDLE_LOCAL_RANK": str(rank), "PADDLE_RANK_IN_NODE": str(rank),
                "PADDLE_LOCAL_SIZE": str(size), "PADDLE_NNODES": "1", "PADDLE_MASTER": f"127.0.0.1:{ports[0]}",
                "PADDLE_CURRENT_ENDPOINT": endpoints[rank], "PADDLE_TRAINER_ENDPOINTS": ",".join(endpoints),
                "PADDLE_DISTRI_BACKEND": "gloo"}
    workers = [f"localhost:{port}" for port in ports[1:size + 1]]
    return {"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}})}


def test_a_run_that_fails_closes_its_group(monkeypatch):
    """Job.run closes the process group when the run stops on a failed collective (or any error), not only when
    it finishes: a torch gloo group left to interpreter exit aborted the surviving process now and then (SIGABRT
    instead of exit 2: 5 of 120 runs of the test below)."""
    events = []

    class RecordingGroup:
        def barrier(self):
            events.append("barrier")

        def close(self):
            events.append("close")

    def lost_process(job):
        events.append("run")
        raise CollectiveFailed("process 0 of 2: summing the gradients over the processes failed")

    monkeypatch.setattr(job_module, "process_group", lambda *args: RecordingGroup())
    monkeypatch.setattr(job_module.Job, "run_in_group", lost_process)
    job = object.__new__(job_module.Job)  # run() needs only the arguments that make its group
    job.args, job.layout = argparse.Namespace(backend="torch", ddp_timeout=60, device="cpu"), Layout(0, 2)
    with pytest.raises(CollectiveFailed):
        job.run()
    assert events == ["run", "close"]


def test_a_process_that_dies_stops_the_others_with_one_line(backend, tmp_path):
    """Process 1 is killed mid-run: process 0 stops at its next collective with a one-line error and exit 2
    (not a hang), and leaves only whole checkpoints."""
    data, model, out = write_glue(tmp_path / "data"), write_model_folder(tmp_path / "model", "bert"), tmp_path / "out"
    argv = [sys.executable, "-m", "tasks", "finetune", "--task", "sst-2", "--model", model, "--data-dir", data,
            "--output-dir", out, "--backend", backend, "--do-train", "--max-steps", "100000", "--save-steps", "1",
            "--batch-size", "2", "--max-seq-length", "16", "--no-progress", "--ddp-timeout", "60"]
    ports = free_ports(3)
    processes = [subprocess.Popen([str(a) for a in argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**child_environment(), **launch_environment(backend, rank, 2, ports)})
                 for rank in range(2)]
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not (out / "checkpoint-2").is_dir():  # training runs in both
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes), \
                [p.communicate()[1][-2000:] for p in processes if p.poll() is not None]
            time.sleep(0.2)
        processes[1].send_signal(signal.SIGKILL)
        started = time.monotonic()
        _, err = processes[0].communicate(timeout=COLLECTIVE_TIMEOUT)
        waited = time.monotonic() - started
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert processes[0].returncode == 2, err[-3000:]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "process 0 of 2: summing" in errors[0] and "another process died" in errors[0], err
    assert "Traceback" not in err and waited < 60
    assert not list(out.glob(".*partial"))
    for checkpoint in out.glob("checkpoint-*"):
        assert {p.name for p in checkpoint.iterdir()} >= {"model.safetensors", "optimizer.safetensors",
                                                          "trainer_state.json"}
