"""Converter speed and memory, printed as ratios against their anchors.

Builds a Funnel checkpoint of a preset's shapes (funnel-xlarge: 468M parameters, 1.9 GB float32; random
data written tensor by tensor), then converts it every way between transformers PyTorch, PaddleNLP and
transformers TF, each conversion in its own process. Targets:
  time   <= 3 x copying the source weights file through the process (read and write in 16 MiB chunks:
            what any converter must at least do; same disk, warm page cache). The in-kernel copy
            (shutil.copyfile, sendfile) is printed too; it never brings the bytes into the process.
            CPU seconds (user + system) are printed as well: on a busy machine they show the work
            itself where wall time also counts waiting for a core.
  memory  = the converter process's peak RSS (getrusage RUSAGE_CHILDREN of a wrapper process that runs
            only it) <= 1.3 x the checkpoint size for .pdparams/.h5 output, <= 0.3 x for safetensors output

    python bench/convert.py [--size xlarge|small] [--repeats 5] [--workdir DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backends import family  # noqa: E402
from backends.tensorfile import write_safetensors  # noqa: E402

# (command, source directory, output directory); each output is a later command's source
STEPS = [("hf2paddle", "hf", "paddle"), ("paddle2hf", "paddle", "hf-from-paddle"), ("hf2tf", "hf", "tf"),
         ("tf2hf", "tf", "hf-from-tf"), ("paddle2tf", "paddle", "tf-from-paddle"),
         ("tf2paddle", "tf", "paddle-from-tf")]
WEIGHTS = {"hf": "model.safetensors", "paddle": "model_state.pdparams", "tf": "tf_model.h5"}
GOALS = {"time": 3.0, "memory": {"hf": 0.3, "paddle": 1.3, "tf": 1.3}}
# runs one command and reports its wall time, CPU time and peak RSS (ru_maxrss is KiB on Linux)
MEASURE = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
           "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
           "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
           "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, "
           "'cpu_seconds': usage.ru_utime + usage.ru_stime, 'max_rss_bytes': usage.ru_maxrss * 1024}))")


def build(directory: Path, preset: str) -> int:
    """A transformers directory with the preset's shapes and seeded random float32 weights; returns its size."""
    spec = family("funnel")
    config = spec.presets[preset].config
    shapes = spec.param_shapes(config, spec.presets[preset].head)
    directory.mkdir(parents=True)

    def produce(name):
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        return rng.standard_normal(shapes[name], dtype=np.float32) * 0.02

    write_safetensors(directory / WEIGHTS["hf"], [(n, np.float32, s) for n, s in shapes.items()], produce,
                      {"format": "pt"})
    (directory / "config.json").write_text(config.to_json_string())
    (directory / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(config.vocab_size)) + "\n")
    return (directory / WEIGHTS["hf"]).stat().st_size


def measure(argv: list) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def copy_seconds(path: Path, scratch: Path, in_kernel: bool, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of copying the same bytes, best of `repeats` (the page cache warm like the
    conversion's)."""
    times = []
    for _ in range(repeats):
        os.sync()  # start, as the conversion does, with no dirty pages waiting to be written back
        started, cpu = time.perf_counter(), time.process_time()
        if in_kernel:
            shutil.copyfile(path, scratch)
        else:
            with open(path, "rb") as src, open(scratch, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
        times.append((time.perf_counter() - started, time.process_time() - cpu))
        scratch.unlink()
    return min(t for t, _ in times), min(c for _, c in times)


def _verdict(value: float, goal: float) -> str:
    return "  ok" if value <= goal else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("xlarge", "small"), default="xlarge", help="funnel-xlarge or funnel-small")
    parser.add_argument("--workdir", help="where the checkpoints go (default: a temporary directory, removed)")
    parser.add_argument("--repeats", type=int, default=5, help="times are the best of this many runs (a shared "
                        "machine's noise only ever adds time)")
    parser.add_argument("--json", help="write the measurements")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        print(f"building funnel-{args.size} in {work} ...", flush=True)
        size = build(work / "hf", f"funnel-{args.size}")
        print(f"checkpoint: {size / 1e9:.2f} GB float32\n")
        print(f"{'command':<10} {'seconds':>8} {'copy s':>7} {'time x':>7} {'goal':>5}      {'peak RSS':>9} "
              f"{'memory x':>8} {'goal':>5}      {'cp s':>5} {'x cp':>5} {'cpu s':>6} {'x copy cpu':>10}")
        rows = []
        for command, src, dst in STEPS:
            source = work / src / WEIGHTS[src.split("-")[0]]
            runs = []
            for attempt in range(args.repeats):
                if attempt:
                    shutil.rmtree(work / dst)
                os.sync()  # no dirty pages of earlier steps waiting to be written back
                runs.append(measure([sys.executable, "-m", "converters", command, str(work / src), str(work / dst)]))
                if runs[-1]["rc"]:
                    raise SystemExit(f"{command} failed with exit code {runs[-1]['rc']}")
            run = {key: min(r[key] for r in runs) for key in ("seconds", "cpu_seconds")}
            run["max_rss_bytes"] = max(r["max_rss_bytes"] for r in runs)
            anchor, anchor_cpu = copy_seconds(source, work / "copy.tmp", False, args.repeats)
            kernel, _ = copy_seconds(source, work / "copy.tmp", True, args.repeats)
            kind = dst.split("-")[0]
            row = {"command": command, "seconds": run["seconds"], "copy_seconds": anchor, "cp_seconds": kernel,
                   "cpu_seconds": run["cpu_seconds"], "copy_cpu_seconds": anchor_cpu,
                   "time_ratio": run["seconds"] / anchor, "max_rss_bytes": run["max_rss_bytes"],
                   "memory_ratio": run["max_rss_bytes"] / size, "memory_goal": GOALS["memory"][kind]}
            rows.append(row)
            print(f"{command:<10} {row['seconds']:8.1f} {anchor:7.1f} {row['time_ratio']:7.2f} {GOALS['time']:5.1f} "
                  f"{_verdict(row['time_ratio'], GOALS['time'])} {row['max_rss_bytes'] / 1e6:7.0f} MB "
                  f"{row['memory_ratio']:8.2f} {row['memory_goal']:5.1f} "
                  f"{_verdict(row['memory_ratio'], row['memory_goal'])} {kernel:5.1f} {row['seconds'] / kernel:5.1f} "
                  f"{row['cpu_seconds']:6.1f} {row['cpu_seconds'] / anchor_cpu:10.2f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"size": args.size, "checkpoint_bytes": size, "steps": rows},
                                                  indent=2))
        return 0 if all(r["time_ratio"] <= GOALS["time"] and r["memory_ratio"] <= r["memory_goal"] for r in rows) else 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
