"""Seed 002's table (TinyBERT, Jiao et al. 2020) on SST-2 or a pair task (MRPC, RTE), with this project's own CLIs.

--task picks the GLUE task (sst-2, the default; mrpc or rte, the issue's "one pair task"); the file keeps its name.
One command, every stage its own process of `python -m tasks` (one framework per process), each skipped when its
output holds a finished result ("reusing ..."), so an interrupted run continues where it stopped (the stages' shared
machinery: bench/_stages.py). Stages 1-2 do not depend on the task and stay in OUT; the task stages (3-5) of SST-2 go
into OUT as well, those of another task into OUT/<task> (OUT/mrpc/teacher-torch, ...), so the pair task's table run
into the SST-2 table's OUT reuses its corpus and general students:

1. corpus: `python -m tasks.data.text squad-contexts` over --squad-file (the paragraphs of SQuAD's train set, one
   per line: real English text), the first --corpus-lines of them (default all) into OUT/corpus.txt (once);
2. general distillation per backend: `python -m tasks distill --general --teacher <MiniLM-L6, pre-trained> --student
   tinybert-4l-312d --config-overrides fit_size=384,num_hidden_layers=3 --train-file OUT/corpus.txt`
   (OUT/general-<backend>). MiniLM-L6 has 6 layers and 384-wide hidden states: TinyBERT's layer mapping needs a
   student whose layers divide the teacher's (4 does not divide 6), so the student has 3 layers (k = 2) of
   tinybert-4l-312d's width 312, and fit_dense maps 312 to the teacher's 384. Budget: --general-steps updates
   (default 2000) of --general-batch-size 32 blocks of --general-seq-length 128 tokens (the seed's length), AdamW
   at --general-learning-rate 1e-4, warmup 10% (the seed used 1e-4 at batch 256 for 3 epochs over English
   Wikipedia: far beyond 2 CPU cores). SQuAD's train set has 18,891 distinct paragraphs, 2.2M words: some 22,000
   blocks of 128 pieces (an estimate at ~1.25 pieces per word), so 2000 x 32 blocks are about 3 passes over them;
3. task teacher: `--teacher DIR` (a MiniLM-L6 fine-tuned on the task), scored on the task's dev split by `python -m
   tasks evaluate` in every backend (OUT/teacher-<backend>), as bench/sst2_bilstm.py;
4. (a) per backend: `python -m tasks finetune --model tinybert-4l-312d` with the same overrides (the shape of (b)),
   numpy init, --tokenizer the teacher's, on the labels of the first --samples train rows (OUT/finetuned-<backend>);
5. (b) per backend, TinyBERT's two task stages as the seed's task_distill.py runs them: `tasks distill
   --intermediate --task T --student OUT/general-<backend> --teacher DIR` (embeddings, hidden states through
   fit_dense, attention scores; the teacher runs beside the student on every batch), then `tasks distill --task
   T --student <stage 2's output> --teacher DIR --soft-loss ce --alpha 1 --temperature 1` (the prediction layer:
   soft cross-entropy with the teacher's distribution alone, as task_distill.py's --pred_distill). Once on the
   plain --samples rows (OUT/intermediate-<backend>, OUT/prediction-<backend>) and once on the augmented transfer set
   (OUT/intermediate-augmented-<backend>, OUT/prediction-augmented-<backend>): --augment-dir PATH, a `tasks augment`
   folder of the same --samples rows and the same teacher (bench/sst2_bilstm.py's OUT/augment), else OUT/augment made
   by `tasks augment --method tang` (--n-iter samples per row; both sentences of a pair) as sst2_bilstm.py makes
   it (OUT/<task>/augment for a pair task). The prediction stage
   reads the teacher's logits stored beside the transfer set; the intermediate stage needs the teacher's hidden
   states, so it runs the teacher on the transfer rows. The seed augments with its own method (TinyBERT's: BERT MLM
   candidates and GloVe neighbours; `tasks augment --method tinybert` here); the transfer set of this bench is
   Tang et al.'s, the one sst2_bilstm.py already made for SST-2;
6. one table: dev accuracy of the teacher, (a), (b) after each task stage, with and without augmentation, per
   backend with the spread across backends (after the intermediate stage the classifier has not been trained: its
   accuracy is that of the untrained head, shown for completeness), the general stage's loss (the mean over its
   updates), and the goals: (b) after the prediction stage within --goal-to-teacher 3 points of the teacher, and
   ahead of (a) by at least --goal-ahead 1 point (the issue's "a clear margin": our number).

Task stages' settings, the same for (a) and both stages of (b) (only the data and the loss differ): batch 32 (the
seed's), max length --max-seq-length, by default 64 for SST-2 and 128 for MRPC and RTE (the teacher's: fine-tune it
with the same; a fifth of MRPC's pairs and a third of RTE's are longer than 64 pieces), --learning-rate 5e-5 (the
seed's intermediate rate), warmup 10%, weight decay 0.01, clipping at norm 1; --epochs passes over the plain rows
(default 3, the seed's prediction stage), --augment-epochs over the transfer set (default 1: 21 times the rows).
The prediction stage alone may run another schedule: --prediction-learning-rate (default --learning-rate) and
--prediction-augment-epochs over the transfer set (default --augment-epochs); the seed's task_distill.py runs it at
3e-5 for 3 epochs over its augmented set (and the intermediate stage for 10 epochs over it). --samples counts the
first train rows (MRPC has 3,668 and RTE 2,490: the default 8000 takes them all). Checkpoints every 500 updates
make a stopped training resume; they are removed once the stage has finished. Scored at the end of training.
OUT/settings.json keeps the options of the general stage (any task) and, for SST-2, those of its task stages;
OUT/<task>/settings.json those of another task's stages: a rerun with other values is refused (exit 2), while the
task stages' options (--teacher, --epochs, ...) of one task do not bind another's.

    python bench/sst2_tinybert.py --teacher DIR --output-dir OUT [--task sst-2|mrpc|rte] [--backends torch,paddle,tf]
        [--samples 8000] [--augment-dir PATH | --n-iter 20] [--seed 42] [--corpus-lines N] [--general-steps 2000]
        [--general-batch-size 32] [--general-seq-length 128] [--general-learning-rate 1e-4] [--epochs 3]
        [--augment-epochs 1] [--learning-rate 5e-5] [--prediction-learning-rate LR] [--prediction-augment-epochs N]
        [--max-seq-length N] [--eval-rows N] [--json PATH]
        [--data-dir DIR] [--squad-file ../shared/data/squad/train-v1.1.reconstructed.json.gz] [--no-progress]

--data-dir defaults to the task's folder in ../shared/data/glue: SST-2, MRPC, RTE/hf_export (the Hugging Face
export form, which the task layer reads too). --teacher's config.json must have the task's label count where it
says one (num_labels, id2label).

--json PATH writes one row per backend and model: {"task", "backend", "model" (teacher, finetuned, general,
intermediate, prediction), "augmented" (the task stages of (b)), "accuracy", "train_loss"}; the prediction rows also
"points_below_teacher", "points_ahead_of_finetuned", "goal_teacher", "goal_ahead" and "goal_pass". Exit: 0 both goals
met by every (b) (with and without augmentation) in every backend, 1 not (or a stage failed), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from _sst2_minilm_helpers import REPO, model_dir
from _stages import (DEFAULT_TASK, MAX_SEQ_LENGTH, TRAINED, TRANSFER_FILE, StageFailed, add_table_arguments,
                     bad_backends, bad_counts, bad_outputs, bad_task_inputs, check_settings, eval_limit,
                     finished_or_run, progress, resuming, run, stage_folder, table_line, tasks_command,
                     teacher_accuracy, transfer_metadata, transfer_set, write_json)

STUDENT = "tinybert-4l-312d"
# MiniLM-L6: 6 layers of 384; the student's 3 layers take every second one (k = 2), fit_dense maps 312 to 384
STUDENT_SHAPE = "fit_size=384,num_hidden_layers=3"
GOAL_TO_TEACHER = 3.0  # points of dev accuracy: (b) at most this far below the teacher
GOAL_AHEAD = 1.0  # points: (b) at least this far ahead of (a)
CHECKPOINT_EVERY = 500  # updates between resumable checkpoints of the training stages
CORPUS = "corpus.txt"
# the settings of every training stage besides the budget and the learning rate
COMMON_TRAINING = ["--warmup-ratio", "0.1", "--max-grad-norm", "1.0", "--save-steps", CHECKPOINT_EVERY]
TASK_TRAINING = ["--batch-size", 32, "--weight-decay", "0.01", *COMMON_TRAINING]  # and the task's max length
# (b)'s task stages, in order: name -> the options of `tasks distill` besides its data and student
DISTILL_STAGES = {"intermediate": ["--intermediate"],
                  "prediction": ["--soft-loss", "ce", "--alpha", 1, "--temperature", 1]}
VARIANTS = (False, True)  # (b) on the plain rows, on the augmented transfer set
LABELS = {"teacher": "teacher", "finetuned": "(a) fine-tuned", "intermediate": "(b) after intermediate",
          "prediction": "(b) after prediction"}
# --task: the tasks this table runs, each with its data folder under ../shared/data/glue and the seed's numbers
TASKS = ("sst-2", "mrpc", "rte")
DATA_DIRS = {"sst-2": "SST-2", "mrpc": "MRPC", "rte": "RTE/hf_export"}
SEED_002 = "seed 002 (Jiao et al. 2020, Table 1, GLUE test): "
SEED_002_TASKS = {"sst-2": "SST-2 BERT-base teacher 93.5, TinyBERT-4 92.6",
                  "mrpc": "MRPC (F1) BERT-base teacher 87.5, TinyBERT-4 86.4",
                  "rte": "RTE BERT-base teacher 66.4, TinyBERT-4 66.6"}
# the options the stages' results depend on, kept in settings.json files (a rerun must give the same): the corpus's
# and the general stage's in OUT/settings.json whatever the task, the task stages' beside them (SST-2: OUT, as
# before --task; another task: OUT/<task>)
GENERAL_OPTIONS = ("squad_file", "seed", "corpus_lines", "general_steps", "general_batch_size", "general_seq_length",
                   "general_learning_rate")
TASK_OPTIONS = ("teacher", "data_dir", "samples", "augment_dir", "n_iter", "seed", "epochs", "augment_epochs",
                "learning_rate", "eval_rows", "max_seq_length", "prediction_learning_rate", "prediction_augment_epochs")
# options added after folders were written without them: the option each one equalled there
OPTIONS_BEFORE = {"prediction_learning_rate": "learning_rate", "prediction_augment_epochs": "augment_epochs"}


def task_title(task: str) -> str:
    """The task as GLUE names its folder: SST-2, MRPC, RTE."""
    from tasks.data.glue import glue_task

    return glue_task(task).directory


def variant_name(stage: str, augmented: bool) -> str:
    return f"{stage}-augmented" if augmented else stage


def task_folder(args) -> Path:
    """Where the task stages go: OUT for SST-2 (the layout before --task), OUT/<task> for another task; the corpus
    and the general stage stay in OUT for every task."""
    out = Path(args.output_dir)
    return out if args.task == DEFAULT_TASK else out / args.task


def augment_folder(args) -> Path:
    return Path(args.augment_dir) if args.augment_dir else task_folder(args) / "augment"


# ---- the stages: commands of `python -m tasks` ----

def corpus(args, logs: Path) -> Path:
    """OUT/corpus.txt, written under another name and renamed when whole (reused when there)."""
    path = Path(args.output_dir) / CORPUS
    if path.is_file():
        print(f"reusing {path}", file=sys.stderr, flush=True)
        return path
    partial = path.with_name("corpus.partial.txt")
    limit = ["--limit", args.corpus_lines] if args.corpus_lines else []
    run("corpus", [sys.executable, "-m", "tasks.data.text", "squad-contexts", args.squad_file, str(partial),
                   *map(str, limit)], logs / "corpus.out")
    os.replace(partial, path)
    return path


def general_command(args, backend: str, folder: Path) -> list[str]:
    command = tasks_command("distill", "--general", "--teacher", model_dir(), "--student", STUDENT,
                            "--config-overrides", STUDENT_SHAPE, "--train-file", Path(args.output_dir) / CORPUS,
                            "--backend", backend, "--output-dir", folder, "--max-steps", args.general_steps,
                            "--batch-size", args.general_batch_size, "--max-seq-length", args.general_seq_length,
                            "--learning-rate", args.general_learning_rate, "--weight-decay", "0.01", "--seed",
                            args.seed, *COMMON_TRAINING, *progress(args))
    return resuming(command, folder)


def task_stage_command(args, stage: str, augmented: bool, backend: str, folder: Path) -> list[str]:
    """(a) `tasks finetune` (stage "finetuned"), or one of (b)'s `tasks distill` stages, on the plain --samples
    rows or the augmented transfer set."""
    prediction = stage == "prediction"
    if augmented:
        epochs = args.prediction_augment_epochs if prediction else args.augment_epochs
        data = ["--train-file", augment_folder(args) / TRANSFER_FILE, "--epochs", epochs]
    else:
        data = ["--max-train-samples", args.samples, "--epochs", args.epochs]
    learning_rate = args.prediction_learning_rate if prediction else args.learning_rate
    common = ["--task", args.task, "--backend", backend, "--data-dir", args.data_dir, "--output-dir", folder,
              "--do-train", "--do-eval", "--learning-rate", learning_rate, "--seed", args.seed, *data,
              "--max-seq-length", args.max_seq_length, *TASK_TRAINING, *eval_limit(args), *progress(args)]
    if stage == "finetuned":
        command = tasks_command("finetune", "--model", STUDENT, "--config-overrides", STUDENT_SHAPE, "--tokenizer",
                                args.teacher, *common)
    else:
        previous = {"intermediate": stage_folder(Path(args.output_dir), "general", backend),
                    "prediction": stage_folder(task_folder(args), variant_name("intermediate", augmented),
                                               backend)}[stage]
        command = tasks_command("distill", "--student", previous, "--teacher", args.teacher, *DISTILL_STAGES[stage],
                                *common)
    return resuming(command, folder)


def training_stage(name: str, folder: Path, command, logs: Path) -> dict:
    """A training stage's all_results.json (reused when there)."""
    return finished_or_run(name, folder, TRAINED, command, logs / f"{folder.name}.out")


def run_stages(args) -> tuple[dict, dict, int, dict]:
    """Every stage in order (backend by backend after the corpus, the teachers' scores and the transfer set):
    accuracy and train loss by (model, augmented, backend), the dev rows scored and the transfer set's rows. The
    corpus and the general stage in OUT (their logs in OUT/logs), the task stages in task_folder (their logs in its
    logs folder)."""
    out, logs = Path(args.output_dir), Path(args.output_dir) / "logs"
    task_out = task_folder(args)
    task_logs = task_out / "logs"
    corpus(args, logs)
    teacher, eval_rows = teacher_accuracy(args, task_out, task_logs, args.task)
    transfer = transfer_set(args, augment_folder(args), task_logs, args.task)
    accuracy = {("teacher", False, backend): value for backend, value in teacher.items()}
    loss = {}
    for backend in args.backends:
        folder = stage_folder(out, "general", backend)
        results = training_stage(f"general distillation in {backend}", folder,
                                 lambda: general_command(args, backend, folder), logs)
        loss["general", False, backend] = results.get("train_loss")
        stages = [("finetuned", False)] + [(stage, augmented) for augmented in VARIANTS for stage in DISTILL_STAGES]
        for stage, augmented in stages:
            folder = stage_folder(task_out, variant_name(stage, augmented), backend)
            results = training_stage(f"{variant_name(stage, augmented)} in {backend}", folder,
                                     lambda: task_stage_command(args, stage, augmented, backend, folder), task_logs)
            accuracy[stage, augmented, backend] = results["eval_acc"]
            loss[stage, augmented, backend] = results.get("train_loss")
    return accuracy, loss, eval_rows, transfer


# ---- the table ----

def goals(teacher: float, finetuned: float, distilled: float) -> dict:
    """(b)'s goals, from dev accuracies (fractions): within GOAL_TO_TEACHER points of the teacher, at least
    GOAL_AHEAD points ahead of (a)."""
    below, ahead = 100 * (teacher - distilled), 100 * (distilled - finetuned)
    met = {"goal_teacher": below <= GOAL_TO_TEACHER, "goal_ahead": ahead >= GOAL_AHEAD}
    return {"points_below_teacher": below, "points_ahead_of_finetuned": ahead, **met, "goal_pass": all(met.values())}


def table_rows(task: str, backends, accuracy: dict, loss: dict) -> list[dict]:
    """The --json rows of `task`: per backend, teacher, (a), the general stage, and (b)'s task stages without and
    with augmentation; the prediction rows with the goals."""
    rows = []
    for backend in backends:
        models = [("teacher", False), ("finetuned", False), ("general", False)] + [
            (stage, augmented) for augmented in VARIANTS for stage in DISTILL_STAGES]
        for model, augmented in models:
            row = {"task": task, "backend": backend, "model": model, "augmented": augmented,
                   "accuracy": accuracy.get((model, augmented, backend)),
                   "train_loss": loss.get((model, augmented, backend))}
            if model == "prediction":
                row.update(goals(accuracy["teacher", False, backend], accuracy["finetuned", False, backend],
                                 row["accuracy"]))
            rows.append(row)
    return rows


def print_table(args, rows: list[dict], eval_rows: int, transfer: dict) -> None:
    backends = args.backends
    by = {(row["model"], row["augmented"], row["backend"]): row for row in rows}
    print(f"\n{task_title(args.task)}: accuracy on the dev split ({eval_rows} rows); teacher {args.teacher}; students "
          f"{STUDENT} ({STUDENT_SHAPE}) on the first {transfer['original_rows']} train rows ({args.epochs} epochs), "
          f"transfer set {transfer['rows']} rows ({transfer['original_rows']} original; {args.augment_epochs} "
          f"epochs), batch 32, max length {args.max_seq_length}, AdamW lr {args.learning_rate:g}"
          f"{prediction_schedule(args)}, seed {args.seed}; general distillation: {args.general_steps} updates of "
          f"{args.general_batch_size} x {args.general_seq_length} tokens, lr {args.general_learning_rate:g}")
    table_line("", backends + ["spread"], "{}")
    table_line("teacher accuracy %", [100 * by["teacher", False, b]["accuracy"] for b in backends], "{:.2f}", "{:.2f}")
    table_line("general stage mean loss", [by["general", False, b]["train_loss"] for b in backends], "{:.4f}",
               "{:.4f}")
    table_line("(a) fine-tuned accuracy %", [100 * by["finetuned", False, b]["accuracy"] for b in backends], "{:.2f}",
               "{:.2f}")
    for augmented in VARIANTS:
        print("(b) general + task distillation, " + ("with augmentation:" if augmented else "without augmentation:"))
        for stage in DISTILL_STAGES:
            table_line(f"  after {stage} %", [100 * by[stage, augmented, b]["accuracy"] for b in backends],
                       "{:.2f}", "{:.2f}")
        final = [by["prediction", augmented, b] for b in backends]
        table_line("  points below the teacher", [row["points_below_teacher"] for row in final], "{:+.2f}")
        table_line("  points ahead of (a)", [row["points_ahead_of_finetuned"] for row in final], "{:+.2f}")
        table_line(f"  goal: <= {GOAL_TO_TEACHER:g} below, >= {GOAL_AHEAD:g} ahead",
                   ["PASS" if row["goal_pass"] else "FAIL" for row in final], "{}")
    print("after the intermediate stage the classifier is untrained (its accuracy is the untrained head's); "
          "(b) is scored after the prediction stage")
    print(SEED_002 + SEED_002_TASKS[args.task])


def prediction_schedule(args) -> str:
    """The prediction stage's own schedule for the table's header, where it differs from the other stages'."""
    if (args.prediction_learning_rate, args.prediction_augment_epochs) == (args.learning_rate, args.augment_epochs):
        return ""
    return (f" (the prediction stage: lr {args.prediction_learning_rate:g}, {args.prediction_augment_epochs} epochs "
            f"over the transfer set)")


# ---- options ----

def bad_input(args) -> str | None:
    """One line naming the option, or None."""
    problem = bad_backends(args.backends) or bad_counts(
        args, ("samples", "n_iter", "corpus_lines", "general_steps", "general_batch_size", "general_seq_length",
               "epochs", "augment_epochs", "prediction_augment_epochs", "eval_rows", "max_seq_length"))
    if problem:
        return problem
    for option in ("learning_rate", "prediction_learning_rate", "general_learning_rate"):
        if not getattr(args, option) > 0:
            return f"--{option.replace('_', '-')} {getattr(args, option)}: must be positive"
    if not Path(args.squad_file).is_file():
        return f"--squad-file {args.squad_file}: no such file (a SQuAD train set, its paragraphs are the corpus)"
    return bad_augment_dir(args) or bad_task_inputs(args, args.task) or bad_outputs(args)


def bad_augment_dir(args) -> str | None:
    """--augment-dir a `tasks augment` folder of --task and of the first --samples train rows (all of them when the
    file has fewer): one line, or None."""
    if not args.augment_dir:
        return None
    if not (Path(args.augment_dir) / TRANSFER_FILE).is_file():
        return f"--augment-dir {args.augment_dir}: no {TRANSFER_FILE} there (a `tasks augment` output folder)"
    meta = transfer_metadata(Path(args.augment_dir))
    task = json.loads(meta.get("task", "null"))
    if task != args.task:
        return f"--augment-dir {args.augment_dir}: its transfer set is of the {task} task, not --task {args.task}"
    length = json.loads(meta.get("max_seq_length", "null"))  # its stored logits: the teacher at that length
    if length is not None and length != args.max_seq_length:
        return (f"--augment-dir {args.augment_dir}: its teacher's logits were computed at max length {length}, not "
                f"--max-seq-length {args.max_seq_length}")
    originals, limit = int(meta["original_rows"]), json.loads(meta.get("max_train_samples", "null"))
    every_row = limit is None or originals < limit  # the train file had fewer rows than the limit
    if originals != args.samples and not (every_row and originals < args.samples):
        return (f"--augment-dir {args.augment_dir}: its transfer set augments {originals} original rows, not "
                f"--samples {args.samples}")
    return None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_table_arguments(parser, "a MiniLM-L6 model folder fine-tuned on --task")
    parser.add_argument("--task", choices=TASKS, default=DEFAULT_TASK,
                        help="the GLUE task of the task stages (default sst-2); the general stage serves every task")
    parser.add_argument("--augment-dir", help="an existing `tasks augment` folder of the same rows and teacher "
                                              "(default: OUT/augment, made here)")
    parser.add_argument("--n-iter", type=int, default=20, help="augmented samples per row, made here (default 20)")
    parser.add_argument("--seed", type=int, default=42, help="augmentation, batch order, dropout, init (default 42)")
    parser.add_argument("--corpus-lines", type=int, help="the first N paragraphs only (default all)")
    parser.add_argument("--general-steps", type=int, default=2000, help="general distillation updates (default 2000)")
    parser.add_argument("--general-batch-size", type=int, default=32, help="(default 32)")
    parser.add_argument("--general-seq-length", type=int, default=128, help="tokens per block (default 128)")
    parser.add_argument("--general-learning-rate", type=float, default=1e-4, help="(default 1e-4)")
    parser.add_argument("--epochs", type=int, default=3, help="task stages' passes over the plain rows (default 3)")
    parser.add_argument("--augment-epochs", type=int, default=1,
                        help="task stages' passes over the transfer set (default 1)")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="the task stages' AdamW rate (default 5e-5)")
    parser.add_argument("--prediction-learning-rate", type=float,
                        help="the prediction stage's own rate (default --learning-rate; the seed's 3e-5)")
    parser.add_argument("--prediction-augment-epochs", type=int,
                        help="the prediction stage's passes over the transfer set (default --augment-epochs; the "
                             "seed's 3)")
    parser.add_argument("--max-seq-length", type=int, help="the teacher's and the task stages' max length "
                                                          "(default: SST-2 64, MRPC and RTE 128)")
    parser.add_argument("--eval-rows", type=int, help="score the first N dev rows only (smoke runs; default all)")
    parser.add_argument("--json", metavar="PATH", help="write the rows {backend, model, augmented, accuracy, ...} here")
    parser.add_argument("--data-dir", help="the task's train.tsv and dev.tsv (default: ../shared/data/glue/SST-2, "
                                           "MRPC or RTE/hf_export, after --task)")
    parser.add_argument("--squad-file",
                        default=str(REPO.parent / "shared" / "data" / "squad" / "train-v1.1.reconstructed.json.gz"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars in the stages")
    args = parser.parse_args()
    if args.data_dir is None:
        args.data_dir = str(REPO.parent / "shared" / "data" / "glue" / DATA_DIRS[args.task])
    if args.max_seq_length is None:
        args.max_seq_length = MAX_SEQ_LENGTH[args.task]
    for option, default in OPTIONS_BEFORE.items():
        if getattr(args, option) is None:
            setattr(args, option, getattr(args, default))
    for option in ("teacher", "output_dir", "data_dir", "squad_file", "augment_dir"):  # the stages run in REPO
        if getattr(args, option):
            setattr(args, option, str(Path(getattr(args, option)).resolve()))
    return args


def main() -> int:
    args = parse_args()
    problem = bad_input(args) or check_settings(args, GENERAL_OPTIONS) or check_settings(
        args, TASK_OPTIONS, task_folder(args), OPTIONS_BEFORE)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        accuracy, loss, eval_rows, transfer = run_stages(args)
    except StageFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    rows = table_rows(args.task, args.backends, accuracy, loss)
    print_table(args, rows, eval_rows, transfer)
    if args.json:
        write_json(args.json, rows)
    return 0 if all(row["goal_pass"] for row in rows if row["model"] == "prediction") else 1


if __name__ == "__main__":
    sys.exit(main())
