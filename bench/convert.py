"""Converter speed and memory, printed as ratios against their anchors.

Builds a Funnel checkpoint of a preset's shapes (funnel-xlarge: 468M parameters, 1.9 GB float32; random
data written tensor by tensor), then converts it every way between transformers PyTorch, PaddleNLP and
transformers TF, each conversion in its own process. Targets:
  time   <= 2 x copying the source weights file through the process (read and write in 16 MiB chunks:
            what any converter must at least do; same disk, warm page cache). The in-kernel copy
            (shutil.copyfile, sendfile) is printed too; it never brings the bytes into the process.
            CPU seconds (user + system) are printed as well: on a busy machine they show the work
            itself where wall time also counts waiting for a core.
  memory  = the converter process's peak RSS (getrusage RUSAGE_CHILDREN of a wrapper process that runs
            only it) <= 1.3 x the checkpoint size for .pdparams/.h5 output, <= 0.3 x for safetensors output

    python bench/convert.py [--size xlarge|small] [--repeats 5] [--workdir DIR] [--json out.json]
    python bench/convert.py --max-shard-size 500MB      # the sharded case: sharded source, sharded outputs

--size huge: the streaming proof. A BERT shape of 6.0B parameters (hidden 2048, intermediate 8192, 118 layers:
24.0 GB float32, more than this machine's memory) is written tensor by tensor as transformers' sharded
safetensors (2GB shards unless --max-shard-size), then converted once each along hf -> paddle -> tf -> hf
(sharded outputs; each source removed when the next step no longer needs it, so at most two copies are on
disk); goal: every conversion's peak RSS under 1 GB. Needs ~50 GB of free disk in --workdir.
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
from backends.checkpoints.formats import get as get_format, sharding  # noqa: E402
from backends.checkpoints.rules import format_rules  # noqa: E402
from converters.core import Prefetcher  # noqa: E402

# (command, source directory, output directory); each output is a later command's source
STEPS = [("hf2paddle", "hf", "paddle"), ("paddle2hf", "paddle", "hf-from-paddle"), ("hf2tf", "hf", "tf"),
         ("tf2hf", "tf", "hf-from-tf"), ("paddle2tf", "paddle", "tf-from-paddle"),
         ("tf2paddle", "tf", "paddle-from-tf")]
WEIGHTS = {"hf": "model.safetensors", "paddle": "model_state.pdparams", "tf": "tf_model.h5"}
GOALS = {"time": 2.0, "memory": {"hf": 0.3, "paddle": 1.3, "tf": 1.3}, "huge_rss_bytes": 1e9}
# --size huge: each step's source is removed after it, unless a later step reads it
HUGE_STEPS = [("hf2paddle", "hf", "paddle"), ("paddle2tf", "paddle", "tf-from-paddle"),
              ("tf2hf", "tf-from-paddle", "hf-from-tf")]
HUGE_SHAPE = {"hidden_size": 2048, "num_attention_heads": 16, "intermediate_size": 8192, "num_hidden_layers": 118}
# runs one command and reports its wall time, CPU time and peak RSS (ru_maxrss is KiB on Linux)
MEASURE = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
           "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
           "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
           "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, "
           "'cpu_seconds': usage.ru_utime + usage.ru_stime, 'max_rss_bytes': usage.ru_maxrss * 1024}))")


def build(directory: Path, family_name: str, config, head: str, max_bytes: int | None = None) -> int:
    """A transformers directory of `config`'s shapes with seeded random float32 weights, written tensor by tensor
    by the converters' own writer (sharded beyond `max_bytes`); returns the weights' size."""
    shapes = family(family_name).param_shapes(config, head)
    rules = format_rules(family_name, "hf")
    directory.mkdir(parents=True)

    blocks = {}  # shape -> seeded random values in [-0.02, 0.02), drawn once

    def produce(name):  # each tensor its shape's block, rolled by a seeded offset: distinct, and cheap to make
        shape = shapes[name]
        if shape not in blocks:
            blocks[shape] = np.random.default_rng(zlib.crc32(repr(shape).encode())).random(shape, np.float32)
            blocks[shape] -= 0.5
            blocks[shape] *= 0.04
        return np.roll(blocks[shape], zlib.crc32(name.encode()) % max(1, int(np.prod(shape))))

    specs = [(n, np.dtype(np.float32), s) for n, s in shapes.items()]
    with Prefetcher([n for n, _, _ in specs], produce) as prefetched:  # draws the next tensor while one is written
        get_format("hf").write(directory, {**config.to_dict(), "architectures": [rules.classes[head]]}, specs,
                               prefetched, rules, max_bytes)
    (directory / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(config.vocab_size)) + "\n")
    return sum(file.stat().st_size for file in weights_files(directory))


def weights_files(directory: Path) -> list[Path]:
    """The weights file, or the shards, of a checkpoint folder (any format)."""
    stems = [name.rpartition(".")[0] for name in WEIGHTS.values()]
    return sorted(file for file in directory.iterdir() if not file.name.endswith(".json")
                  and any(file.name.startswith(stem + ".") or file.name.startswith(stem + "-") for stem in stems))


def measure(argv: list, work: Path) -> dict:
    """Run `argv` under MEASURE. Its bytecode is cached in `work` (removed with it), as an installed package's is:
    with PYTHONDONTWRITEBYTECODE set, every run compiled the project's modules again (0.4 s on a busy machine)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, check=True, cwd=REPO,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def copy_seconds(paths: list, scratch: Path, in_kernel: bool, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of copying the same bytes (the weights file or every shard), best of `repeats` (the
    page cache warm like the conversion's)."""
    times = []
    for _ in range(repeats):
        os.sync()  # start, as the conversion does, with no dirty pages waiting to be written back
        started, cpu = time.perf_counter(), time.process_time()
        for path in paths:
            if in_kernel:
                shutil.copyfile(path, scratch)
            else:
                with open(path, "rb") as src, open(scratch, "wb") as dst:
                    shutil.copyfileobj(src, dst, 16 << 20)
            scratch.unlink()
        times.append((time.perf_counter() - started, time.process_time() - cpu))
    return min(t for t, _ in times), min(c for _, c in times)


def _verdict(value: float, goal: float) -> str:
    return "  ok" if value <= goal else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("xlarge", "small", "huge"), default="xlarge",
                        help="funnel-xlarge, funnel-small, or the 24 GB BERT shape (see above)")
    parser.add_argument("--max-shard-size", metavar="SIZE", help="the sharded case: the source is written in shards "
                        "of at most SIZE and every conversion writes shards of at most SIZE (as save_pretrained)")
    parser.add_argument("--steps", type=int, default=len(HUGE_STEPS), help="--size huge: run the first STEPS "
                        f"conversions of {' -> '.join([HUGE_STEPS[0][1]] + [dst for _, _, dst in HUGE_STEPS])}")
    parser.add_argument("--workdir", help="where the checkpoints go (default: a temporary directory, removed)")
    parser.add_argument("--repeats", type=int, default=5, help="times are the best of this many runs (a shared "
                        "machine's noise only ever adds time)")
    parser.add_argument("--json", help="write the measurements")
    args = parser.parse_args()
    shard = ["--max-shard-size", args.max_shard_size] if args.max_shard_size else []
    max_bytes = sharding.parse_size(args.max_shard_size) if args.max_shard_size else None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        if args.size == "huge":
            return huge(work, args, shard or ["--max-shard-size", "2GB"], max_bytes or sharding.parse_size("2GB"))
        preset = family("funnel").presets[f"funnel-{args.size}"]
        print(f"building funnel-{args.size} in {work}{' sharded at ' + args.max_shard_size if shard else ''} ...",
              flush=True)
        size = build(work / "hf", "funnel", preset.config, preset.head, max_bytes)
        print(f"checkpoint: {size / 1e9:.2f} GB float32 in {len(weights_files(work / 'hf'))} file(s)\n")
        print(f"{'command':<10} {'seconds':>8} {'copy s':>7} {'time x':>7} {'goal':>5}      {'peak RSS':>9} "
              f"{'memory x':>8} {'goal':>5}      {'cp s':>5} {'x cp':>5} {'cpu s':>6} {'x copy cpu':>10}")
        rows = []
        for command, src, dst in STEPS:
            runs = []
            for attempt in range(args.repeats):
                if attempt:
                    shutil.rmtree(work / dst)
                os.sync()  # no dirty pages of earlier steps waiting to be written back
                runs.append(measure([sys.executable, "-m", "converters", command, str(work / src), str(work / dst),
                                     *shard], work))
                if runs[-1]["rc"]:
                    raise SystemExit(f"{command} failed with exit code {runs[-1]['rc']}")
            run = {key: min(r[key] for r in runs) for key in ("seconds", "cpu_seconds")}
            run["max_rss_bytes"] = max(r["max_rss_bytes"] for r in runs)
            sources = weights_files(work / src)
            anchor, anchor_cpu = copy_seconds(sources, work / "copy.tmp", False, args.repeats)
            kernel, _ = copy_seconds(sources, work / "copy.tmp", True, args.repeats)
            kind = dst.split("-")[0]
            row = {"command": command, "seconds": run["seconds"], "copy_seconds": anchor, "cp_seconds": kernel,
                   "cpu_seconds": run["cpu_seconds"], "copy_cpu_seconds": anchor_cpu,
                   "time_ratio": run["seconds"] / anchor, "max_rss_bytes": run["max_rss_bytes"],
                   "memory_ratio": run["max_rss_bytes"] / size, "memory_goal": GOALS["memory"][kind],
                   "weights_files": len(weights_files(work / dst))}
            rows.append(row)
            print(f"{command:<10} {row['seconds']:8.1f} {anchor:7.1f} {row['time_ratio']:7.2f} {GOALS['time']:5.1f} "
                  f"{_verdict(row['time_ratio'], GOALS['time'])} {row['max_rss_bytes'] / 1e6:7.0f} MB "
                  f"{row['memory_ratio']:8.2f} {row['memory_goal']:5.1f} "
                  f"{_verdict(row['memory_ratio'], row['memory_goal'])} {kernel:5.1f} {row['seconds'] / kernel:5.1f} "
                  f"{row['cpu_seconds']:6.1f} {row['cpu_seconds'] / anchor_cpu:10.2f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"size": args.size, "max_shard_size": args.max_shard_size,
                                                   "checkpoint_bytes": size, "steps": rows}, indent=2))
        return 0 if all(r["time_ratio"] <= GOALS["time"] and r["memory_ratio"] <= r["memory_goal"] for r in rows) else 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def huge(work: Path, args, shard: list, max_bytes: int) -> int:
    """The 24 GB checkpoint built shard by shard and converted once per step; each step's peak RSS against 1 GB."""
    spec = family("bert")
    preset = spec.presets["bert-large-uncased"]
    config = preset.config.replace(**HUGE_SHAPE)
    need = sum(int(np.prod(s)) for s in spec.param_shapes(config, preset.head).values()) * 4
    if shutil.disk_usage(work).free < 2.1 * need:
        raise SystemExit(f"{work}: {shutil.disk_usage(work).free / 1e9:.0f} GB free; --size huge needs "
                         f"{2.1 * need / 1e9:.0f} GB (two copies of the checkpoint)")
    print(f"memory available now: {_meminfo('MemAvailable') / 1e9:.1f} GB of {_meminfo('MemTotal') / 1e9:.1f} GB")
    print(f"building a {need / 1e9:.1f} GB BERT ({HUGE_SHAPE}) in {work / 'hf'}, shards of {shard[1]} ...", flush=True)
    started = time.perf_counter()
    size = build(work / "hf", "bert", config, preset.head, max_bytes)
    built = time.perf_counter() - started
    print(f"built {size / 1e9:.2f} GB in {len(weights_files(work / 'hf'))} shards in {built:.0f} s "
          f"({size / built / 1e6:.0f} MB/s)\n")
    print(f"{'command':<10} {'seconds':>8} {'MB/s':>6} {'cpu s':>6} {'peak RSS':>9} {'goal':>7} {'shards':>6}")
    rows = []
    for step, (command, src, dst) in enumerate(HUGE_STEPS[:args.steps]):
        os.sync()
        run = measure([sys.executable, "-m", "converters", command, str(work / src), str(work / dst), *shard], work)
        if run["rc"]:
            raise SystemExit(f"{command} failed with exit code {run['rc']}")
        row = {"command": command, **run, "weights_files": len(weights_files(work / dst)), "bytes": size}
        rows.append(row)
        print(f"{command:<10} {run['seconds']:8.1f} {size / run['seconds'] / 1e6:6.0f} {run['cpu_seconds']:6.1f} "
              f"{run['max_rss_bytes'] / 1e6:6.0f} MB {GOALS['huge_rss_bytes'] / 1e6:4.0f} MB {row['weights_files']:6d} "
              f"{_verdict(run['max_rss_bytes'], GOALS['huge_rss_bytes'])}", flush=True)
        if src not in [later for _, later, _ in HUGE_STEPS[step + 1:args.steps]]:
            shutil.rmtree(work / src)  # no later step reads it: keep two copies on disk at most
    if args.json:
        Path(args.json).write_text(json.dumps({"size": "huge", "shape": HUGE_SHAPE, "max_shard_size": shard[1],
                                               "checkpoint_bytes": size, "build_seconds": built, "steps": rows},
                                              indent=2))
    if args.workdir:  # 24 GB copies are not left behind
        for _, src, dst in HUGE_STEPS:
            shutil.rmtree(work / src, ignore_errors=True)
            shutil.rmtree(work / dst, ignore_errors=True)
    return 0 if all(r["max_rss_bytes"] <= GOALS["huge_rss_bytes"] for r in rows) else 1


def _meminfo(key: str) -> int:
    """A /proc/meminfo value in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
