"""Issue targets of `python -m parity compare funnel-xlarge`, printed as ratios against their anchors.

Targets: float32 forward mean |diff| <= 1e-6 and max <= 1e-5 (paddle and tf against torch), float64
every tensor <= 1e-10, whole-run wall time <= 1.15 x the backends' own load+forward+backward time,
peak memory of the run <= 1.1 x the largest worker (issue 17). The per-phase seconds (the harness's files
and comparisons, each worker's start, import, load, forward, backward, fetch, write and exit) and each
worker's own peak memory are printed after the ratios. Anchors: transformers' TF Funnel against its
PyTorch one, forward only: mean 2.2e-6, max 1.6e-5; the published Paddle Funnel port: mean 3.8e-7,
max 5.7e-6 forward, one gradient checked at max 3.6e-4.

    python bench/parity_xlarge.py [--target funnel-xlarge] [--seq-len 128] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from backends import installed_frameworks  # noqa: E402
from parity.harness import resolve_target, run_parity  # noqa: E402
from parity.report import cost_lines, write_json  # noqa: E402

ANCHORS = {"transformers TF vs PT (forward)": (2.2e-6, 1.6e-5), "published Paddle port (forward)": (3.8e-7, 5.7e-6)}
ANCHOR_GRAD_MAX = 3.6e-4
GOALS = {"forward_mean": 1e-6, "forward_max": 1e-5, "float64_max": 1e-10, "time_ratio": 1.15, "memory_ratio": 1.1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="funnel-xlarge")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--json", help="also write the full parity report")
    args = parser.parse_args()
    report = run_parity(resolve_target(args.target), installed_frameworks(), batch=args.batch, seq_len=args.seq_len,
                        progress=lambda m: print(f"  {m}", flush=True))
    if args.json:
        write_json(report, args.json)
    print(f"\n{args.target}, batch {args.batch} x {args.seq_len}, backends {', '.join(installed_frameworks())}")
    for backend in report.backends:
        last = [r for r in report.results if r.backend == backend and r.tensor == "last_hidden_state"]
        f32 = next(r for r in last if r.dtype == "float32")
        outputs32 = [r for r in report.results if r.backend == backend and r.dtype == "float32" and r.kind == "output"]
        grads32 = [r for r in report.results if r.backend == backend and r.dtype == "float32" and r.kind == "grad"]
        all64 = [r for r in report.results if r.backend == backend and r.dtype == "float64"]
        worst64 = max(all64, key=lambda r: r.max_abs / max(1.0, r.scale))
        print(f"{backend}: float32 last_hidden_state mean {f32.mean_abs:.2e} ({f32.mean_abs / GOALS['forward_mean']:.2f} x goal), "
              f"max {f32.max_abs:.2e} ({f32.max_abs / GOALS['forward_max']:.2f} x goal)")
        for anchor, (mean, peak) in ANCHORS.items():
            print(f"    vs {anchor}: mean {f32.mean_abs / mean:.2f} x, max {f32.max_abs / peak:.2f} x")
        print(f"    float32 all outputs: max {max(r.max_abs for r in outputs32):.2e}; all gradients: max "
              f"{max(r.max_abs for r in grads32):.2e} ({max(r.max_abs for r in grads32) / ANCHOR_GRAD_MAX:.2f} x the "
              f"published Paddle port's one checked gradient)")
        print(f"    float64 worst tensor {worst64.tensor}: {worst64.max_abs:.2e} "
              f"({worst64.max_abs / max(1.0, worst64.scale) / GOALS['float64_max']:.3f} x goal, scaled)")
    print(f"time: wall {report.wall_seconds:.0f} s, {report.time_ratio:.2f} x the backends' own time "
          f"({report.time_ratio / GOALS['time_ratio']:.2f} x goal)")
    print(f"memory: {report.memory_ratio:.2f} x the largest worker ({report.memory_ratio / GOALS['memory_ratio']:.2f} x goal)")
    for line in cost_lines(report):
        print(f"    {line}")
    print("PASSED" if report.passed else f"FAILED: {json.dumps(report.first_divergence)}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
