"""The torch GPU paths on a real GPU, as one prepared run: float64 parity on the GPU against the CPU, a short
SST-2 fine-tuning with `--device gpu --bf16` (and `--fp16`), and training throughput against transformers'
Trainer on the same GPU. Prints one summary; `--json PATH` writes every number.

Made for a lent machine with torch and CUDA but neither paddle nor tensorflow, no network and no installs
(Python packages there: torch, transformers, tokenizers, safetensors, tqdm, numpy). The MiniLM-L6 checkpoint
and SST-2 do not live in the repository, so they travel beside it, prepared here first:

    python bench/gpu_check.py --prepare .gpu_carry     # MiniLM-L6 (weights in float16: 45 MB) and SST-2
    echo /.gpu_carry/ >> .git/info/exclude               # ignored, then named in the device run's carry
    # on the GPU machine, from the repository root (about 4 minutes on an H200):
    python3 bench/gpu_check.py --carry .gpu_carry --json $OUT/gpu_check.json

Sections (`--sections`, all by default), each run on its own, a failure recorded and the others still run:
- parity: each `--parity-targets` preset at full size (seeded weights, batch 2 x 128), forward and backward of
  the parity loss through backends.run.run_backend on the GPU and on the CPU in float64: every output and
  gradient within parity's float64 rule (1e-10 x max(1, max|cpu|)). Also float32 on the GPU (TF32 off, as
  every parity run) against the CPU's float64: its error over the CPU float32 error, pooled (~1 when the GPU
  computes true float32; TF32 would make it ~100).
- finetune: `python -m tasks finetune --task sst-2 --backend torch --device gpu --bf16 --dropout-masks device`
  on the first --train-samples rows, one epoch, the README's SST-2 settings; then the same with --fp16: dev
  accuracy, time, samples/s, updates skipped by the loss scaler.
- throughput: samples/s of our torch loop (float32 with shared, device and native dropout masks; bf16 with
  device masks) and of transformers' Trainer (float32; bf16), the same weights and batches
  (bench/train_throughput.py), after --warmup untimed updates.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from _sst2_minilm_helpers import REPO, SEQ_LEN, in_batch_order, model_source, sst2_features

SECTIONS = ("parity", "finetune", "throughput")
PARITY_TARGETS = "bert-base-uncased,roberta-base,funnel-small,tinybert-4l-312d,bilstm-sst2"
FINETUNE = ["--epochs", "1", "--learning-rate", "5e-5", "--batch-size", "32", "--max-seq-length", str(SEQ_LEN),
            "--warmup-ratio", "0.06", "--weight-decay", "0.01", "--seed", "42", "--no-progress"]
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
DEVICE = "gpu"  # --dry-run-on-cpu: "cpu", to check this script itself on a machine without a GPU


def synchronize() -> None:
    """Wait for the GPU's queued work (timings end there)."""
    import torch

    if DEVICE == "gpu":
        torch.cuda.synchronize()


def prepare(folder: Path) -> None:
    """MiniLM-L6 (weights as float16) and SST-2 into `folder`, to carry to the GPU machine."""
    import numpy as np

    from _sst2_minilm_helpers import model_dir
    from backends.tensorfile import SafetensorsReader, save_arrays

    source = Path(model_dir())
    (folder / "minilm").mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / "minilm" / name)
    stored = SafetensorsReader(source / "model.safetensors")
    weights = {name: stored[name].astype(np.float16) if stored[name].dtype.kind == "f" else stored[name]
               for name in stored}  # float16 halves what travels (the carry limit is 64 MiB)
    save_arrays(folder / "minilm" / "model.safetensors", weights, metadata={"format": "pt"})
    data = REPO.parent / "shared" / "data" / "glue" / "SST-2"
    shutil.copytree(data, folder / "SST-2", dirs_exist_ok=True)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    print(f"{folder}: MiniLM-L6 (float16 weights) and SST-2, {size / 2 ** 20:.1f} MiB")


# ---- parity: float64 on the GPU against the CPU ---------------------------------------------------------------

def parity(targets: list[str], batch: int, seq_len: int) -> dict:
    import torch

    from backends import framework
    from parity.tolerances import Tolerances

    rule = Tolerances().float64_abs
    rows = {}
    for target in targets:
        try:
            try:
                rows[target] = parity_of(target, batch, seq_len, rule)
            except RuntimeError as exc:  # a CUDA kernel without a deterministic version: run it anyway, say so
                if "deterministic" not in str(exc):
                    raise
                adapter = framework("torch")
                adapter.deterministic = lambda: torch.use_deterministic_algorithms(True, warn_only=True)
                rows[target] = {**parity_of(target, batch, seq_len, rule), "deterministic": f"warn_only ({exc})"}
        except Exception:  # noqa: BLE001  (recorded; the other targets still run)
            rows[target] = {"error": traceback.format_exc()[-3000:], "float64_pass": False}
            print(f"parity {target}: FAILED {rows[target]['error'].strip().splitlines()[-1]}", flush=True)
    # what the torch adapter's no_tf32() (called by run_backend) left set
    tf32 = {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}
    return {"targets": rows, "rule": rule, "pass": all(row["float64_pass"] for row in rows.values()),
            "tf32_after_run": tf32, "batch": batch, "seq_len": seq_len}


def parity_of(target: str, batch: int, seq_len: int, rule: float) -> dict:
    """One preset: float64 and float32 on the CPU and on the GPU, compared."""
    import numpy as np

    from backends import family, presets
    from backends.run import run_backend

    preset = presets()[target]
    spec = family(preset.family)
    head = "seqcls"
    params = spec.init_params(preset.config, head, np.random.default_rng(0))
    inputs = spec.make_inputs(preset.config, head, batch, seq_len, np.random.default_rng(1))
    run = {}
    started = time.perf_counter()
    for device, dtype in (("cpu", "float64"), ("gpu", "float64"), ("cpu", "float32"), ("gpu", "float32")):
        run[device, dtype] = run_backend(preset.family, "torch", preset.config, head, params, inputs, dtype,
                                         device=DEVICE if device == "gpu" else device)
        synchronize()
    reference = run["cpu", "float64"]
    worst_name, worst = None, 0.0
    for name, value in reference.items():
        scale = max(1.0, float(np.max(np.abs(value))) if value.size else 1.0)
        gap = float(np.max(np.abs(run["gpu", "float64"][name] - value))) / scale if value.size else 0.0
        if gap >= worst:
            worst_name, worst = name, gap
    squared = {device: sum(float(np.sum((run[device, "float32"][name].astype(np.float64) - value) ** 2))
                           for name, value in reference.items()) for device in ("cpu", "gpu")}
    ratio = (squared["gpu"] / squared["cpu"]) ** 0.5 if squared["cpu"] else float("nan")
    print(f"parity {target}: float64 worst {worst:.2e} ({worst_name}); float32 GPU/CPU error {ratio:.2f}", flush=True)
    return {"family": preset.family, "float64_worst_scaled": worst, "float64_worst_tensor": worst_name,
            "float64_pass": worst <= rule, "tensors": len(reference), "float32_gpu_over_cpu_error": ratio,
            "seconds": time.perf_counter() - started}


# ---- finetune: python -m tasks on the GPU ------------------------------------------------------------------------

def finetune(model: str, data_dir: str, samples: int, options: list[str], scratch: Path) -> dict:
    out = scratch / ("run" + "".join(options).replace("-", "_"))
    command = [sys.executable, "-m", "tasks", "finetune", "--task", "sst-2", "--model", model, "--backend", "torch",
               "--data-dir", data_dir, "--output-dir", str(out), "--do-train", "--do-eval", "--device", DEVICE,
               "--max-train-samples", str(samples), *FINETUNE, *options]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    results = json.loads((out / "all_results.json").read_text())
    print(f"finetune {' '.join(options)}: eval_acc {results.get('eval_acc')}, "
          f"{results.get('train_samples_per_second', 0):.1f} samples/s", flush=True)
    return {"command": " ".join(command[1:]), "wall_seconds": wall, **results}


# ---- throughput: our torch loop against transformers' Trainer ---------------------------------------------------

def throughput(model: str, data_dir: str, steps: int, warmup: int, batch_size: int) -> dict:
    import torch

    from tasks.data.features import load_tokenizer
    from train_throughput import OPTIMIZER, run_ours, run_transformers

    source = model_source(model, OPTIMIZER["seed"])
    rows = max(steps, warmup) * batch_size
    data = in_batch_order(sst2_features(data_dir, "train", rows, load_tokenizer(model)), rows, OPTIMIZER["seed"])
    def trainer(**options):
        return lambda: run_transformers(model, source, data, steps, warmup, batch_size, use_cpu=DEVICE == "cpu",
                                        **options)

    def ours(masks, **options):
        return lambda: run_ours("torch", source, data, steps, warmup, batch_size, masks, device=DEVICE, **options)

    runs = {"transformers Trainer float32": trainer(), "transformers Trainer bf16": trainer(bf16=True),
            "ours float32, shared masks": ours("shared"), "ours float32, device masks": ours("device"),
            "ours float32, native masks": ours("native"), "ours bf16, device masks": ours("device", bf16=True),
            "ours bf16, native masks": ours("native", bf16=True)}
    results = {}
    for name, run in runs.items():
        try:
            seconds = run()
            synchronize()
            results[name] = {"samples_per_second": steps * batch_size / seconds, "seconds": seconds}
            print(f"throughput {name}: {results[name]['samples_per_second']:.1f} samples/s", flush=True)
        except Exception as exc:  # noqa: BLE001  (recorded; the other runs go on)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}
            print(f"throughput {name}: FAILED {results[name]['error']}", flush=True)
        if DEVICE == "gpu":
            torch.cuda.empty_cache()
    for precision in ("float32", "bf16"):
        anchor = results.get(f"transformers Trainer {precision}", {}).get("samples_per_second")
        for name, row in results.items():
            if name.startswith(f"ours {precision}") and anchor and "samples_per_second" in row:
                row["vs_trainer"] = row["samples_per_second"] / anchor
    return {"runs": results, "steps": steps, "warmup": warmup, "batch_size": batch_size, "seq_len": SEQ_LEN}


def environment() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def summary(report: dict) -> str:
    lines = [f"GPU check on {report['environment'].get('device')} (torch {report['environment'].get('torch')}, "
             f"transformers {report['environment'].get('transformers')})"]
    for section in SECTIONS:
        result = report.get(section)
        if result is None:
            continue
        if "error" in result:
            lines.append(f"{section}: FAILED {result['error'].splitlines()[-1]}")
        elif section == "parity":
            for target, row in result["targets"].items():
                if "error" in row:
                    lines.append(f"parity {target:<18} FAILED {row['error'].strip().splitlines()[-1]}")
                    continue
                lines.append(f"parity {target:<18} float64 GPU vs CPU worst {row['float64_worst_scaled']:.1e} "
                             f"({'pass' if row['float64_pass'] else 'FAIL'}, rule {result['rule']:g}); float32 "
                             f"GPU/CPU error {row['float32_gpu_over_cpu_error']:.2f}")
        elif section == "finetune":
            for name, row in result.items():
                lines.append(f"finetune {name}: " + ("FAILED " + row["error"].splitlines()[-1] if "error" in row else
                             f"dev accuracy {row.get('eval_acc', float('nan')):.4f}, {row['train_runtime']:.1f} s, "
                             f"{row['train_samples_per_second']:.1f} samples/s, "
                             f"{row.get('train_overflow_skipped_updates', 0)} updates skipped by the loss scaler"))
        else:
            for name, row in result["runs"].items():
                lines.append(f"throughput {name:<30} " + (f"FAILED {row['error'].splitlines()[-1]}" if "error" in row
                             else f"{row['samples_per_second']:8.1f} samples/s"
                             + (f"  {row['vs_trainer']:.2f}x the Trainer" if "vs_trainer" in row else "")))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", metavar="DIR", help="write MiniLM-L6 (float16) and SST-2 into DIR and stop")
    parser.add_argument("--carry", default=str(REPO / ".gpu_carry"),
                        help="the folder --prepare wrote (minilm/, SST-2/); default .gpu_carry")
    parser.add_argument("--model", help="model folder (default CARRY/minilm)")
    parser.add_argument("--data-dir", help="SST-2 folder (default CARRY/SST-2)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--parity-targets", default=PARITY_TARGETS)
    parser.add_argument("--parity-batch", type=int, default=2)
    parser.add_argument("--parity-seq-len", type=int, default=128)
    parser.add_argument("--train-samples", type=int, default=8000, help="SST-2 train rows of the fine-tuning runs")
    parser.add_argument("--steps", type=int, default=50, help="timed updates of each throughput run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--dry-run-on-cpu", action="store_true",
                        help="run every section with the CPU standing for the GPU (small sizes: check this script)")
    args = parser.parse_args()
    if args.prepare:
        prepare(Path(args.prepare))
        return 0
    os.environ.setdefault("USE_TF", "0")  # transformers would import tensorflow where one is installed
    import torch

    global DEVICE
    DEVICE = "cpu" if args.dry_run_on_cpu else "gpu"
    if DEVICE == "gpu" and not torch.cuda.is_available():
        print("error: no CUDA device (this check runs the torch GPU paths)", file=sys.stderr)
        return 2
    model = str(Path(args.model or Path(args.carry) / "minilm").resolve())
    data_dir = str(Path(args.data_dir or Path(args.carry) / "SST-2").resolve())
    sections = [name for name in args.sections.split(",") if name]
    report = {"environment": environment(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "section_seconds": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        for section in sections:
            started = time.perf_counter()
            try:
                if section == "parity":
                    report[section] = parity(args.parity_targets.split(","), args.parity_batch, args.parity_seq_len)
                elif section == "finetune":
                    report[section] = {}
                    for options in (["--bf16", "--dropout-masks", "device"], ["--fp16", "--dropout-masks", "device"]):
                        name = " ".join(options)
                        try:
                            report[section][name] = finetune(model, data_dir, args.train_samples, options,
                                                             Path(scratch))
                        except Exception as exc:  # noqa: BLE001
                            report[section][name] = {"error": str(exc)}
                elif section == "throughput":
                    report[section] = throughput(model, data_dir, args.steps, args.warmup, args.batch_size)
                else:
                    raise ValueError(f"unknown section {section!r} (known: {', '.join(SECTIONS)})")
            except Exception:  # noqa: BLE001  (recorded; the next section still runs)
                report[section] = {"error": traceback.format_exc()[-4000:]}
            report["section_seconds"][section] = time.perf_counter() - started
            print(f"-- {section} done in {report['section_seconds'][section]:.0f} s", flush=True)
    print("\n" + summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 1 if any(failed(report.get(name, {})) for name in sections) else 0


def failed(result: dict) -> bool:
    """A section failed: it raised, a parity target missed the rule, or one of its runs raised."""
    rows = result.get("targets") or result.get("runs") or {k: v for k, v in result.items() if isinstance(v, dict)}
    return "error" in result or not result.get("pass", True) or any("error" in row for row in rows.values())


if __name__ == "__main__":
    sys.exit(main())
