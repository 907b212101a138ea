"""SQuAD v1.1 with the real MiniLM-L6 checkpoint: full fine-tuning, adapters and DeFormer splits, per backend.

The runs the DeFormer and adapter issues ask for, on a part of SQuAD that fits 2 CPU cores: a seeded random
sample of --train-questions questions from the train file and of --dev-questions from dev-v1.1.json (written
once as SQuAD JSON into --output-dir, the same sample for every run), then each run of --runs in each
backend of --backends as its own `python -m tasks` process, and one table of dev F1 / EM.

Runs (names as in the table):
  full            MiniLM-L6 fine-tuned whole (the DeFormer's teacher and the adapters' baseline)
  seq_bn, lora    the base frozen, an adapter and the span head trained (--train-adapter, lr --adapter-lr)
  deformer-E2-A-E3    the same checkpoint split into a DeFormer (e.g. deformer-0-5-1), trained on the labels
  deformer-E2-A-E3-kd distilled from `full` (trained in --teacher-backend, default torch) ("teachsl" soft spans + "teachhs" hidden MSE)
  ...-from-full       either of the two above, the DeFormer initialised from the fine-tuned `full` run (its
                      layers and span head) instead of the pre-trained checkpoint (the DeFormer paper starts
                      from the pre-trained weights; these runs measure what the fine-tuned ones add)

Lengths: the full model reads "[CLS] q [SEP] p [SEP]" windows of --max-seq-length tokens; a DeFormer reads the
question part (at most --max-query-length question tokens) and passage windows of --max-seq-length minus that
part, so both see the same passage tokens per window.

    python bench/squad_minilm.py --output-dir runs/squad [--runs full,seq_bn,deformer-0-5-1,deformer-0-5-1-kd]
        [--backends torch,paddle,tf] [--train-questions 2500] [--dev-questions 1000] [--json rows.json]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _sst2_minilm_helpers import REPO, model_dir
from _stages import check_settings

DATA = REPO.parent / "shared" / "data" / "squad"
DEFORMER = re.compile(r"^deformer-(\d+)-(\d+)-(\d+)(-kd)?(-from-full)?$")
# the options every run folder's results depend on: OUT/settings.json holds them (bench/_stages.py)
RESULT_OPTIONS = ("train_file", "dev_file", "train_questions", "dev_questions", "data_seed", "seed", "epochs",
                  "batch_size", "learning_rate", "adapter_lr", "max_seq_length", "max_query_length", "doc_stride",
                  "alpha", "temperature", "hidden_mse_weight", "teacher_backend")


def sample_squad(source: Path, questions: int, seed: int, target: Path) -> int:
    """A seeded uniform sample of `questions` questions of a SQuAD file, written as SQuAD JSON (articles and
    paragraphs kept in their order, each paragraph with its sampled questions only). Returns the count."""
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8") as file:
        squad = json.load(file)
    ids = [qa["id"] for article in squad["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    keep = set(ids) if questions >= len(ids) else \
        {ids[i] for i in np.random.default_rng(seed).choice(len(ids), questions, replace=False)}
    data = []
    for article in squad["data"]:
        paragraphs = [{**paragraph, "qas": [qa for qa in paragraph["qas"] if qa["id"] in keep]}
                      for paragraph in article["paragraphs"]]
        paragraphs = [paragraph for paragraph in paragraphs if paragraph["qas"]]
        if paragraphs:
            data.append({**article, "paragraphs": paragraphs})
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps({"version": squad.get("version", "1.1"), "data": data}))
    partial.replace(target)
    return len(keep)


def run_command(run: str, backend: str, args, files: dict, output: Path) -> list[str]:
    """The `python -m tasks` command line of one run."""
    common = ["--task", "squad", "--backend", backend, "--train-file", str(files["train"]),
              "--validation-file", str(files["dev"]), "--output-dir", str(output), "--do-train", "--do-eval",
              "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--warmup-ratio", "0.1",
              "--weight-decay", "0.01", "--max-query-length", str(args.max_query_length), "--doc-stride",
              str(args.doc_stride), "--seed", str(args.seed), "--no-progress"]
    if run in ("full", "seq_bn", "lora"):
        adapter = [] if run == "full" else ["--train-adapter", "--adapter-config", run]
        rate = args.learning_rate if run == "full" else args.adapter_lr
        return [sys.executable, "-m", "tasks", "finetune", "--model", str(model_dir()), *common, "--max-seq-length",
                str(args.max_seq_length), "--learning-rate", str(rate), *adapter]
    e2, assist, e3, distilled, from_full = DEFORMER.match(run).groups()
    split = ["--encoder2-layers", e2, "--assist-layers", assist, "--encoder3-layers", e3, "--max-seq-length",
             str(args.max_seq_length - args.max_query_length - 2), "--learning-rate", str(args.learning_rate)]
    full = output.parent / f"full-{args.teacher_backend}"
    start = str(full if from_full else model_dir())
    if not distilled:
        return [sys.executable, "-m", "tasks", "finetune", "--model", start, *common, *split]
    return [sys.executable, "-m", "tasks", "distill", "--student", start, "--teacher-model-path", str(full),
            "--teacher-backend", args.teacher_backend, *common, *split, "--alpha", str(args.alpha), "--temperature",
            str(args.temperature), "--hidden-mse-weight", str(args.hidden_mse_weight)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True, help="the sampled data and one folder per run (kept; a "
                        "run whose folder holds eval scores is not run again; OUT/settings.json binds the options "
                        "they depend on: other values are refused)")
    parser.add_argument("--runs", default="full,seq_bn,deformer-0-3-3,deformer-0-5-1,deformer-0-5-1-kd")
    parser.add_argument("--backends", default="torch")
    parser.add_argument("--train-file", default=str(DATA / "train-v1.1.reconstructed.json.gz"))
    parser.add_argument("--dev-file", default=str(DATA / "dev-v1.1.json"))
    parser.add_argument("--train-questions", type=int, default=2500)
    parser.add_argument("--dev-questions", type=int, default=1000)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the question samples")
    parser.add_argument("--seed", type=int, default=42, help="training seed")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="full and DeFormer runs")
    parser.add_argument("--adapter-lr", type=float, default=1e-3, help="seq_bn and lora runs")
    parser.add_argument("--max-seq-length", type=int, default=192)
    parser.add_argument("--max-query-length", type=int, default=30)
    parser.add_argument("--doc-stride", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--hidden-mse-weight", type=float, default=1.0)
    parser.add_argument("--teacher-backend", default="torch", help="the -kd runs' teacher and the -from-full runs' "
                        "start: the full run of this backend (run it first; default torch)")
    parser.add_argument("--json", help="write the table's rows here")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    runs, backends = args.runs.split(","), args.backends.split(",")
    for run in runs:
        if run not in ("full", "seq_bn", "lora") and not DEFORMER.match(run):
            parser.error(f"--runs: unknown run {run!r} (full, seq_bn, lora, deformer-E2-A-E3[-kd][-from-full])")
    problem = check_settings(args, RESULT_OPTIONS)
    if problem:  # one line, as the other benches of bench/_stages.py report it
        print(f"error: {problem}", file=sys.stderr)
        return 2
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    files, counts = {}, {}
    for split, source, questions in (("train", args.train_file, args.train_questions),
                                     ("dev", args.dev_file, args.dev_questions)):
        files[split] = root / f"{split}-{questions}q-seed{args.data_seed}.json"
        if not files[split].exists():
            sample_squad(Path(source), questions, args.data_seed, files[split])
        counts[split] = sum(len(p["qas"]) for a in json.loads(files[split].read_text())["data"] for p in a["paragraphs"])
    rows = []
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "USE_TF": "0", "USE_FLAX": "0"}
    for run in runs:
        for backend in backends:
            output = root / f"{run}-{backend}"
            results_file = output / "all_results.json"
            started = time.perf_counter()
            if not (results_file.exists() and "eval_f1" in json.loads(results_file.read_text())):
                subprocess.run([*run_command(run, backend, args, files, output), "--overwrite-output-dir"],
                               check=True, cwd=REPO, env=env)
            results = json.loads(results_file.read_text())
            rows.append({"run": run, "backend": backend, "f1": results["eval_f1"],
                         "exact_match": results["eval_exact_match"], "train_s": results.get("train_runtime"),
                         "wall_s": time.perf_counter() - started})
    print(f"\nSQuAD v1.1, MiniLM-L6, {counts['train']} train questions (seeded sample {args.data_seed}), "
          f"{args.epochs:g} epoch(s), dev: {counts['dev']} questions of dev-v1.1.json")
    width = max(len("run"), *(len(row["run"]) for row in rows))
    print(f"{'run':<{width}} {'backend':<8} {'F1':>6} {'EM':>6} {'train s':>8}")
    for row in rows:
        print(f"{row['run']:<{width}} {row['backend']:<8} {row['f1']:>6.2f} {row['exact_match']:>6.2f} "
              f"{row['train_s'] or 0:>8.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"train_questions": counts["train"], "dev_questions": counts["dev"],
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
