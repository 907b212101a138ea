"""Seed 001's table (Tang et al. 2019, distilling BERT into a BiLSTM) on SST-2, with this project's own CLIs.

One command, every stage its own process of `python -m tasks` (one framework per process), each skipped when its
output folder already holds a finished result ("reusing ..."), so an interrupted run continues where it stopped:

1. teacher: `--teacher DIR` (a MiniLM-L6 fine-tuned on SST-2), scored on SST-2 dev by `python -m tasks evaluate` in
   every backend (OUT/teacher-<backend>/eval_results.json; the folder's own eval_results.json is printed beside);
2. transfer set: `python -m tasks augment --method tang --backend torch` over the first --samples train rows,
   --n-iter samples per row (masking p 0.1, n-gram sampling p 0.25; the POS rule is not applied, see
   tasks/augment.py), the teacher's logits stored beside OUT/augment/train.tsv once and read by every student;
3. plain BiLSTM per backend: `python -m tasks finetune --model bilstm-sst2` on the labels of the same --samples rows
   (OUT/plain-<backend>);
4. distilled BiLSTM per backend: `python -m tasks distill --student bilstm-sst2 --train-file OUT/augment/train.tsv
   --soft-loss mse --alpha 1`: the teacher's logits alone, as Tang et al. (OUT/distilled-<backend>);
5. inference time over the 872 dev sentences at batch 1 and batch 64, per backend, of the teacher, the plain BiLSTM
   (the distilled one has its shape) and a BERT-base-shaped model (the bert-base-uncased preset, numpy init, timing
   only), each in its own worker process running `tasks evaluate`'s prediction path (the backend's Runner and
   GlueTask.predict, float32, eval mode) over the same tokenised rows (max length 64, each batch cut to the positions
   its rows use, as predict_all does for every model here; at batch 1 a sentence's own length): one untimed pass over
   the first batches, then --repeats timed passes (the best wall seconds kept; CPU seconds too). Parameters: total,
   and without the word-embedding matrix (position and type embeddings stay counted);
6. one table: accuracies, the distillation gain (distilled - plain) per backend against the issue's goal (>= 2.5
   points in every backend), parameters, seconds and speed ratios, and the spread of each row across backends.

Student hyper-parameters, the same for the plain and the distilled BiLSTM (only the data and the loss differ):
bilstm-sst2 (300-d embeddings over the teacher's uncased vocabulary, BiLSTM 150 per direction, ReLU layer 200,
dropout 0.1 with the shared masks, so the backends compute the same thing), batch 50 (Tang et al.'s), max length 64
(the teacher's), --epochs passes (default 5), AdamW at --learning-rate (default 1e-3, no warmup, no weight decay,
clipping at norm 1). Tang et al. used Adadelta (lr 1.0); ours is AdamW, and 1e-3 is the rate that trained the BiLSTM
best in a smoke run (torch, the first 300 train rows, 5 epochs at batch 50, scored on the first 300 dev rows: 1e-3 train
loss 0.695 -> 0.387, dev 60.7%; 2e-3 loss -> 0.106, dev 56.0%, over-fitting sooner; 5e-4 loss -> 0.660, dev 51.3%, too
slow). The students are scored at the end of training (no selection on dev). Checkpoints every 1000 updates make a
stopped training resume (`--resume`); they are removed once the run has finished.

    python bench/sst2_bilstm.py --teacher DIR --output-dir OUT [--backends torch,paddle,tf] [--samples 8000]
        [--n-iter 20] [--seed 42] [--epochs 5] [--learning-rate 1e-3] [--repeats 2] [--timing-rows N] [--json PATH]
        [--data-dir ../shared/data/glue/SST-2] [--no-progress]

--json PATH writes one row per backend and model (teacher, plain, distilled, bert-base): {"backend", "model",
"accuracy", "params", "params_without_embedding", "seconds_batch1", "seconds_batch64", "cpu_seconds_batch1",
"cpu_seconds_batch64", "speedup_vs_teacher_batch1", ..., "speedup_vs_bert_base_batch64"}; the distilled row also
"gain" and "goal_pass". Exit: 0 the gain goal met in every backend, 1 not (or a stage failed), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from _sst2_minilm_helpers import REPO, SEQ_LEN, worker_environment
from _stages import (TRAINED, TRANSFER_FILE, StageFailed, add_table_arguments, bad_backends, bad_counts, bad_outputs,
                     bad_task_inputs, check_settings, finished_or_run, progress, resuming, results_of, run,
                     stage_folder, table_line, tasks_command, teacher_accuracy, transfer_set, write_json)

GOAL_GAIN = 2.5  # points of dev accuracy, distilled - plain, in every backend
STUDENT = "bilstm-sst2"
BERT_BASE = "bert-base-uncased"  # the BERT-base-shaped model of the speed ratios (numpy init)
BATCH_SIZES = (1, 64)
WARMUP_BATCHES = 4  # untimed batches before each batch size's timed passes
CHECKPOINT_EVERY = 1000  # updates between resumable checkpoints of the students
# the students' settings besides --epochs, --learning-rate and --seed (Tang et al.'s batch of 50)
STUDENT_SETTINGS = ["--batch-size", "50", "--max-seq-length", str(SEQ_LEN), "--warmup-ratio", "0",
                    "--weight-decay", "0", "--max-grad-norm", "1.0", "--save-steps", str(CHECKPOINT_EVERY)]
# the word-embedding matrix, left out of params_without_embedding (BERT's and the BiLSTM's canonical names)
WORD_EMBEDDINGS = re.compile(r"(^|\.)(word_embeddings|embedding)\.weight$")
# what is timed: name -> the model of that name (a folder, or the preset), given the run's folders
TIMED = ("teacher", "bilstm", "bert-base")
MODELS = ("teacher", "plain", "distilled")
LABELS = {"teacher": "teacher", "plain": "plain BiLSTM", "distilled": "distilled BiLSTM", "bilstm": "BiLSTM",
          "bert-base": "BERT-base shape"}
SEED_001 = "seed 001 (Tang et al.): BERT-base 93.1, BiLSTM 84.77, distilled 87.32 (+2.55), 273x faster"
# the options the stages' results depend on, kept in OUT/settings.json (a rerun must give the same)
RESULT_OPTIONS = ("teacher", "data_dir", "samples", "n_iter", "seed", "epochs", "learning_rate", "repeats",
                  "timing_rows")


# ---- the stages: commands of `python -m tasks` ----

def student_command(args, model: str, backend: str, folder: Path) -> list[str]:
    """finetune on the labels of the --samples rows (plain), or distill on the transfer set's stored logits."""
    common = ["--task", "sst-2", "--backend", backend, "--data-dir", args.data_dir, "--tokenizer", args.teacher,
              "--output-dir", folder, "--do-train", "--do-eval", "--epochs", args.epochs, "--learning-rate",
              args.learning_rate, "--seed", args.seed, *STUDENT_SETTINGS, *progress(args)]
    if model == "plain":
        command = tasks_command("finetune", "--model", STUDENT, "--max-train-samples", args.samples, *common)
    else:
        command = tasks_command("distill", "--student", STUDENT, "--teacher", args.teacher, "--train-file",
                                augment_folder(args) / TRANSFER_FILE, "--soft-loss", "mse", "--alpha", 1, *common)
    return resuming(command, folder)


def augment_folder(args) -> Path:
    return Path(args.output_dir) / "augment"


# ---- the timing worker (its own process per backend and model) ----

def timing_worker(args) -> dict:
    """Wall and CPU seconds of `tasks evaluate`'s prediction over the dev rows at each batch size, the
    parameter counts and the dev accuracy of the timed model."""
    import numpy as np

    from backends import family
    from tasks.data.features import load_tokenizer
    from tasks.train import runner_class
    from tasks.train.loop import predict_all, take
    from tasks.train.model import load_model
    from tasks.train.task import Options, make_task

    task = make_task("sst-2", args.data_dir, {}, Options(max_seq_length=SEQ_LEN))
    source = load_model(args.time_model, task.head, task.num_labels, seed=args.seed)
    split = task.load("dev", load_tokenizer(args.teacher), args.timing_rows,
                      family(source.family).model_inputs(source.config, source.head))
    # tasks.train.job's make_runner with `tasks evaluate`'s defaults (float32, cpu)
    runner = runner_class(args.time_backend)(source.family, source.config, source.head, source.params,
                                             dtype="float32")
    sizes = {name: int(np.asarray(value).size) for name, value in source.params.items()}
    result = {"model": args.time_model, "family": source.family, "rows": len(split.examples),
              "params": sum(sizes.values()),
              "params_without_embedding": sum(size for name, size in sizes.items()
                                              if not WORD_EMBEDDINGS.search(name))}
    for batch_size in BATCH_SIZES:
        predict_all(runner, take(split.inputs, slice(0, WARMUP_BATCHES * batch_size)), batch_size)  # untimed
        seconds, cpu_seconds = [], []
        for _ in range(args.repeats):
            started, cpu_started = time.perf_counter(), time.process_time()
            outputs = task.predict(runner, split, batch_size)
            seconds.append(time.perf_counter() - started)
            cpu_seconds.append(time.process_time() - cpu_started)
        result[f"seconds_batch{batch_size}"] = min(seconds)
        result[f"cpu_seconds_batch{batch_size}"] = min(cpu_seconds)
        result[f"accuracy_batch{batch_size}"] = task.score(split, task.decode(split, outputs))["acc"]
    return result


def timed_model(args, name: str, backend: str) -> str:
    return {"teacher": args.teacher, "bilstm": str(stage_folder(Path(args.output_dir), "plain", backend)),
            "bert-base": BERT_BASE}[name]


def timing(args, name: str, backend: str) -> dict:
    """A timing worker's result: OUT/timing/<name>-<backend>.json, reused when there."""
    path = Path(args.output_dir) / "timing" / f"{name}-{backend}.json"
    if path.is_file():
        print(f"reusing {path}", file=sys.stderr, flush=True)
        return json.loads(path.read_text())
    command = [sys.executable, __file__, "--time-model", timed_model(args, name, backend), "--time-backend", backend,
               "--time-result", str(path), "--teacher", args.teacher, "--data-dir", args.data_dir, "--seed",
               str(args.seed), "--repeats", str(args.repeats), "--output-dir", args.output_dir,
               *(["--timing-rows", str(args.timing_rows)] if args.timing_rows else [])]
    run(f"timing {name} in {backend}", command, Path(args.output_dir) / "logs" / f"timing-{name}-{backend}.out",
        env=worker_environment())
    return json.loads(path.read_text())


# ---- the table ----

def table_rows(args, accuracy: dict, timings: dict) -> list[dict]:
    """The --json rows: per backend, teacher, plain, distilled and bert-base."""
    rows = []
    for backend in args.backends:
        timed = {"teacher": timings["teacher", backend], "plain": timings["bilstm", backend],
                 "distilled": timings["bilstm", backend], "bert-base": timings["bert-base", backend]}
        for model, numbers in timed.items():
            row = {"backend": backend, "model": model,
                   "accuracy": accuracy.get((model, backend)),
                   "params": numbers["params"], "params_without_embedding": numbers["params_without_embedding"],
                   "timed_as": "plain" if model == "distilled" else model}
            for batch_size in BATCH_SIZES:
                for key in ("seconds", "cpu_seconds"):
                    row[f"{key}_batch{batch_size}"] = numbers[f"{key}_batch{batch_size}"]
                for anchor, anchor_key in (("teacher", "teacher"), ("bert-base", "bert_base")):
                    row[f"speedup_vs_{anchor_key}_batch{batch_size}"] = (
                        timed[anchor][f"seconds_batch{batch_size}"] / numbers[f"seconds_batch{batch_size}"])
            if model == "distilled":
                row["gain"] = 100 * (accuracy["distilled", backend] - accuracy["plain", backend])
                row["goal_pass"] = row["gain"] >= GOAL_GAIN
            rows.append(row)
    return rows


def print_table(args, rows: list[dict], eval_rows: int, dev_rows: int, teacher_file: dict | None,
                transfer: dict) -> None:
    backends = args.backends
    by = {(row["model"], row["backend"]): row for row in rows}
    line = table_line

    print(f"\nSST-2: accuracy on the dev split ({eval_rows} rows), seconds over {dev_rows} dev rows; teacher "
          f"{args.teacher}; students on the first {args.samples} train rows, transfer set {transfer['rows']} rows "
          f"({transfer['original_rows']} original, --n-iter {args.n_iter}); epochs {args.epochs}, batch 50, AdamW lr "
          f"{args.learning_rate:g}, seed {args.seed}")
    print(f"{'':<34}" + "".join(f"{b:>12}" for b in backends) + f"{'spread':>12}")
    for model in MODELS:
        line(f"{LABELS[model]} accuracy %", [100 * by[model, b]["accuracy"] for b in backends], "{:.2f}", "{:.2f}")
    gains = [by["distilled", b]["gain"] for b in backends]
    line("gain (distilled - plain), points", gains, "{:+.2f}", "{:.2f}")
    line(f"goal gain >= {GOAL_GAIN}", ["PASS" if by["distilled", b]["goal_pass"] else "FAIL" for b in backends],
         "{}")
    for model in ("teacher", "plain", "bert-base"):
        for batch_size in BATCH_SIZES:
            label = f"{LABELS['bilstm' if model == 'plain' else model]} s, batch {batch_size}"
            line(label, [by[model, b][f"seconds_batch{batch_size}"] for b in backends], "{:.2f}", "{:.2f}")
    for anchor, key in (("teacher", "teacher"), ("BERT-base", "bert_base")):
        for batch_size in BATCH_SIZES:
            line(f"BiLSTM speed-up vs {anchor}, b{batch_size}",
                 [by["plain", b][f"speedup_vs_{key}_batch{batch_size}"] for b in backends], "{:.1f}x", "{:.1f}")
    print("parameters (total / without the word-embedding matrix):")
    for model in ("teacher", "plain", "bert-base"):
        row = by[model, backends[0]]
        print(f"  {LABELS['bilstm' if model == 'plain' else model]:<20} {row['params']:>13,} / "
              f"{row['params_without_embedding']:,}")
    stored = f"{100 * teacher_file['eval_acc']:.2f}%" if teacher_file and "eval_acc" in teacher_file else "none"
    print(f"teacher accuracy: `python -m tasks evaluate` in each backend (max length {SEQ_LEN}); its folder's own "
          f"eval_results.json: {stored}")
    print(f"seconds: wall, best of {args.repeats} passes over the dev rows; the distilled BiLSTM has the plain one's "
          f"shape (timed once)")
    print(SEED_001)


# ---- options ----

def bad_input(args) -> str | None:
    """One line naming the option, or None."""
    problem = bad_backends(args.backends) or bad_counts(args, ("samples", "n_iter", "epochs", "repeats", "timing_rows"))
    if problem:
        return problem
    if not args.learning_rate > 0:
        return f"--learning-rate {args.learning_rate}: must be positive"
    return bad_task_inputs(args) or bad_outputs(args)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_table_arguments(parser, "a MiniLM-L6 (or other) model folder fine-tuned on SST-2")
    parser.add_argument("--n-iter", type=int, default=20, help="augmented samples per row (default 20)")
    parser.add_argument("--seed", type=int, default=42, help="augmentation, batch order, dropout, init (default 42)")
    parser.add_argument("--epochs", type=int, default=5, help="passes of both students over their data (default 5)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="the students' AdamW rate (default 1e-3)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per model and batch size (default 2)")
    parser.add_argument("--timing-rows", type=int, help="time the first N dev rows only (smoke runs; default all)")
    parser.add_argument("--json", metavar="PATH", help="write the rows {backend, model, accuracy, ...} here")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars in the stages")
    parser.add_argument("--time-model", help=argparse.SUPPRESS)  # the timing worker
    parser.add_argument("--time-backend", help=argparse.SUPPRESS)
    parser.add_argument("--time-result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for option in ("teacher", "output_dir", "data_dir"):  # the stages run in the repository (its packages first)
        setattr(args, option, str(Path(getattr(args, option)).resolve()))
    return args


def main() -> int:
    args = parse_args()
    if args.time_model:
        result = timing_worker(args)
        path = Path(args.time_result)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps(result, indent=1) + "\n")
        os.replace(path.with_suffix(".tmp"), path)  # whole, or not at all
        return 0
    problem = bad_input(args) or check_settings(args, RESULT_OPTIONS)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out, logs = Path(args.output_dir), Path(args.output_dir) / "logs"
    try:
        teacher, eval_rows = teacher_accuracy(args, out, logs)
        accuracy = {("teacher", backend): value for backend, value in teacher.items()}
        transfer = transfer_set(args, augment_folder(args), logs)
        for model in ("plain", "distilled"):
            for backend in args.backends:
                folder = stage_folder(out, model, backend)
                results = finished_or_run(f"{model} BiLSTM in {backend}", folder, TRAINED,
                                          lambda: student_command(args, model, backend, folder),
                                          logs / f"{model}-{backend}.out")
                accuracy[model, backend] = results["eval_acc"]
        timings = {(name, backend): timing(args, name, backend) for backend in args.backends for name in TIMED}
    except StageFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    rows = table_rows(args, accuracy, timings)
    print_table(args, rows, eval_rows, timings["teacher", args.backends[0]]["rows"],
                results_of(Path(args.teacher), "eval_results.json"), transfer)
    if args.json:
        write_json(args.json, rows)
    return 0 if all(row["goal_pass"] for row in rows if row["model"] == "distilled") else 1


if __name__ == "__main__":
    sys.exit(main())
