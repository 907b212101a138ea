"""What the seeds' table benches (bench/sst2_bilstm.py, bench/sst2_tinybert.py) share: every stage is its own
`python -m tasks` process (one framework per process), skipped when its output folder already holds its finished
results file ("reusing ..."), so an interrupted run continues where it stopped; OUT/settings.json keeps the options
the results depend on (a rerun into the same folder must give the same); the teacher's dev accuracy per backend
(`tasks evaluate`) and the augmented transfer set (`tasks augment --method tang`, the teacher's logits stored
beside it); the checks of the output options; the spread of a table row across backends."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _sst2_minilm_helpers import REPO, SEQ_LEN
from backends import FRAMEWORKS  # the helpers put the repository on sys.path

SETTINGS_FILE = "settings.json"
TRANSFER_FILE = "train.tsv"  # what tasks augment writes into its folder (and its logits beside it)
AUGMENT_BACKEND = "torch"  # the teacher's logits of the transfer set (byte-identical in every backend)
DEFAULT_TASK = "sst-2"  # the task of the stages' functions unless told (sst2_bilstm.py runs SST-2 alone)
# the teacher's max length per task (its evaluation and its transfer-set logits; the task stages of
# sst2_tinybert.py too): SST-2's sentences fit 64 pieces, while 20% of MRPC's pairs and 37% of RTE's are longer
# than 64 (none of MRPC's and 12% of RTE's longer than 128; MiniLM-L6's tokenizer, train and dev)
MAX_SEQ_LENGTH = {"sst-2": SEQ_LEN, "mrpc": 128, "rte": 128}
EVALUATED = "eval_results.json"  # what `tasks evaluate` writes last
TRAINED = "all_results.json"  # what `tasks finetune` / `tasks distill` write last


class StageFailed(Exception):
    pass


def tasks_command(*arguments) -> list[str]:
    return [sys.executable, "-m", "tasks", *map(str, arguments)]


def stage_folder(out: Path, model: str, backend: str) -> Path:
    return out / f"{model}-{backend}"


def progress(args) -> list[str]:
    return ["--no-progress"] if args.no_progress else []


def eval_limit(args) -> list[str]:
    """--max-eval-samples of a bench's --eval-rows (smoke runs), where it has the option and it is given."""
    rows = getattr(args, "eval_rows", None)
    return ["--max-eval-samples", str(rows)] if rows else []


def max_length(args, task: str) -> int:
    """--max-seq-length of a bench that has the option and was given it, else the task's teacher's length."""
    return getattr(args, "max_seq_length", None) or MAX_SEQ_LENGTH[task]


def resuming(command: list[str], folder: Path) -> list[str]:
    """A training stage's command continuing from its latest checkpoint, or overwriting what a stopped run left
    without one."""
    if any(folder.glob("checkpoint-*")):
        return command + ["--resume"]
    return command + (["--overwrite-output-dir"] if folder.is_dir() and any(folder.iterdir()) else [])


def run(name: str, command: list[str], log: Path, env=None) -> None:
    """One stage in its own process: its stdout (the results JSON) into `log`, its stderr (notes, progress) to
    ours. StageFailed naming the stage and exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, env=env)
    if done.returncode != 0:
        raise StageFailed(f"{name} failed (exit {done.returncode}); its command: {' '.join(command)}")
    print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def results_of(folder: Path, file: str) -> dict | None:
    path = folder / file
    return json.loads(path.read_text()) if path.is_file() else None


def finished_or_run(name: str, folder: Path, file: str, command, log: Path) -> dict:
    """The results file of a stage: reused when there, else made by running the stage (`command()`)."""
    results = results_of(folder, file)
    if results is not None:
        print(f"reusing {folder / file}", file=sys.stderr, flush=True)
        return results
    run(name, command(), log)
    for checkpoint in folder.glob("checkpoint-*"):  # the run finished: its resumable checkpoints are not needed
        shutil.rmtree(checkpoint)
    return json.loads((folder / file).read_text())


def teacher_command(args, backend: str, folder: Path, task: str = DEFAULT_TASK) -> list[str]:
    """`tasks evaluate` of --teacher on the `task`'s dev split in `backend`."""
    return tasks_command("evaluate", "--task", task, "--model", args.teacher, "--backend", backend, "--data-dir",
                         args.data_dir, "--max-seq-length", max_length(args, task), "--output-dir", folder,
                         "--batch-size", 64, *eval_limit(args), *progress(args))


def teacher_accuracy(args, out: Path, logs: Path, task: str = DEFAULT_TASK) -> tuple[dict, int]:
    """The teacher's dev accuracy on `task` per backend of --backends (out/teacher-<backend>) and the dev rows
    scored."""
    accuracy = {}
    for backend in args.backends:
        folder = stage_folder(out, "teacher", backend)
        results = finished_or_run(f"teacher evaluate in {backend}", folder, EVALUATED,
                                  lambda: teacher_command(args, backend, folder, task),
                                  logs / f"teacher-{backend}.out")
        accuracy[backend], eval_rows = results["eval_acc"], results["eval_samples"]
    return accuracy, eval_rows


def augment_command(args, folder: Path, task: str = DEFAULT_TASK) -> list[str]:
    return tasks_command("augment", "--task", task, "--method", "tang", "--data-dir", args.data_dir, "--teacher",
                         args.teacher, "--backend", AUGMENT_BACKEND, "--n-iter", args.n_iter, "--seed", args.seed,
                         "--max-train-samples", args.samples, "--max-seq-length", max_length(args, task),
                         "--output-dir", folder, *progress(args))


def transfer_metadata(folder: Path) -> dict:
    """The metadata of a `tasks augment` folder's logits file (its row counts, and its settings as JSON texts)."""
    from backends.tensorfile import SafetensorsReader
    from tasks.data.augment import logits_path

    return SafetensorsReader(logits_path(folder / TRANSFER_FILE)).metadata()


def transfer_rows(folder: Path) -> dict:
    """The row counts of a `tasks augment` folder, from its logits file's metadata."""
    meta = transfer_metadata(folder)
    return {"rows": int(meta["rows"]), "original_rows": int(meta["original_rows"])}


def transfer_set(args, folder: Path, logs: Path, task: str = DEFAULT_TASK) -> dict:
    """The augment stage of `task` into `folder` (reused when its train.tsv is there: augment writes it last, whole;
    a stopped augment run continues by itself): its row counts."""
    if (folder / TRANSFER_FILE).is_file():
        print(f"reusing {folder / TRANSFER_FILE}", file=sys.stderr, flush=True)
    else:
        run("augment", augment_command(args, folder, task), logs / "augment.out")
    return transfer_rows(folder)


def spread(values) -> float:
    values = [value for value in values if value is not None]
    return max(values) - min(values) if values else float("nan")


def check_settings(args, options, folder: Path | None = None, before: dict | None = None) -> str | None:
    """folder/settings.json (default OUT/settings.json) holds the `options` the results of the stages in `folder`
    depend on (written by the first run); a rerun into the same folder with other values would reuse results of
    other settings: one line naming them, or None. The file may hold the options of other stages (not compared
    here); those of `options` it does not hold yet are added (stages that run into the folder for the first time).
    `before` maps an option added to a bench later to the option it equalled in folders written without it: there
    it is compared with that one's stored value. --backends may change (a backend added later runs its own
    stages)."""
    settings = {option: getattr(args, option) for option in options}
    path = Path(folder or args.output_dir) / SETTINGS_FILE
    stored = json.loads(path.read_text()) if path.is_file() else {}
    for option, earlier in (before or {}).items():
        if option not in stored and earlier in stored:
            stored[option] = stored[earlier]
    changed = [option for option in options if option in stored and stored[option] != settings[option]]
    if changed:
        return (f"--output-dir {args.output_dir} holds the results of other settings ("
                + ", ".join(f"--{option.replace('_', '-')} {stored[option]}" for option in changed)
                + "); rerun with those or give another --output-dir")
    if any(option not in stored for option in options):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{SETTINGS_FILE}.partial")
        partial.write_text(json.dumps({**stored, **settings}, indent=1) + "\n")
        os.replace(partial, path)  # whole, or not at all
    return None


def bad_backends(backends) -> str | None:
    unknown = [name for name in backends if name not in FRAMEWORKS]
    if unknown or not backends:
        return f"--backends {','.join(backends)}: choose from {', '.join(FRAMEWORKS)}"
    return None


def bad_counts(args, options) -> str | None:
    """The first of `options` (counts; None: not given) below 1, as one line, or None."""
    for option in options:
        if getattr(args, option) is not None and getattr(args, option) < 1:
            return f"--{option.replace('_', '-')} {getattr(args, option)}: must be at least 1"
    return None


def bad_task_inputs(args, task: str = DEFAULT_TASK) -> str | None:
    """--teacher a model folder of `task`'s labels (its config.json's finetuning_task and label count, num_labels or
    id2label, as `tasks finetune` and transformers write them, where it has them), --data-dir `task`'s train and dev
    files (the dev file read: the task's header and rows): one line naming the option, or None."""
    from tasks.data.files import DataError
    from tasks.data.glue import glue_task, read_glue_file
    from tasks.train.model import FINETUNING_TASK, same_task

    glue = glue_task(task)
    config = Path(args.teacher) / "config.json"
    if not config.is_file():
        return f"--teacher {args.teacher}: no config.json there (a fine-tuned {glue.directory} model folder is needed)"
    try:
        stored = json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        return f"--teacher {args.teacher}: its config.json is not JSON ({exc})"
    if not isinstance(stored, dict):
        return f"--teacher {args.teacher}: its config.json is not a JSON object"
    fine_tuned_on = stored.get(FINETUNING_TASK)
    if isinstance(fine_tuned_on, str) and not same_task(fine_tuned_on, task):
        return (f"--teacher {args.teacher}: fine-tuned on {fine_tuned_on} (its config.json's {FINETUNING_TASK}); "
                f"a fine-tuned {glue.directory} model folder is needed")
    labels = stored.get("num_labels", len(stored.get("id2label") or {}) or None)
    if labels is not None and labels != glue.num_labels:
        return (f"--teacher {args.teacher}: its config.json has {labels} labels, {glue.directory} has "
                f"{glue.num_labels} (a fine-tuned {glue.directory} model folder is needed)")
    for split in ("train", "dev"):
        if not (Path(args.data_dir) / glue.files[split]).is_file():
            return f"--data-dir {args.data_dir}: no {glue.directory} {glue.files[split]} there"
    try:
        read_glue_file(Path(args.data_dir) / glue.files["dev"], glue)
    except DataError as exc:
        return f"--data-dir {args.data_dir}: {exc}"
    return None


def bad_outputs(args) -> str | None:
    """--output-dir a folder that can be made and written, --json a writable place: one line, or None."""
    output = Path(args.output_dir)
    if output.exists() and not output.is_dir():
        return f"--output-dir {args.output_dir}: is a file"
    existing = output
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        return f"--output-dir {args.output_dir}: {existing} is not writable"
    if args.json and not os.access(Path(args.json).resolve().parent, os.W_OK):
        return f"--json {args.json}: its folder is not writable"
    return None


def add_table_arguments(parser, teacher_help: str) -> None:
    """The options every seed-table bench starts with: the teacher, the output folder, backends, train rows."""
    parser.add_argument("--teacher", required=True, help=teacher_help)
    parser.add_argument("--output-dir", required=True, help="every stage's folder goes here (rerun to resume)")
    parser.add_argument("--backends", default=",".join(FRAMEWORKS), type=lambda text: text.split(","),
                        help="comma-separated (default: all)")
    parser.add_argument("--samples", type=int, default=8000, help="original train rows (default 8000)")


def write_json(path: str, rows: list[dict]) -> None:
    Path(path).write_text(json.dumps(rows, indent=1) + "\n")


def table_line(label: str, values: list, fmt: str, spread_fmt: str | None = None) -> None:
    """One row of a table: the label, a cell per backend (None: "-"), and the spread across them when
    `spread_fmt` is given."""
    cells = "".join(f"{fmt.format(v) if v is not None else '-':>12}" for v in values)
    tail = f"{spread_fmt.format(spread(values)):>12}" if spread_fmt else ""
    print(f"{label:<34}{cells}{tail}")
