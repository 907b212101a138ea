"""python -m parity compare TARGET | list: prove that ports compute the same function."""
from __future__ import annotations

import argparse
import os
import sys

from backends import FRAMEWORKS

DEFAULT_TARGET = "funnel-xlarge"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m parity", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the families, their heads and presets")
    compare = sub.add_parser(
        "compare", help="run the same weights and inputs through several backends and compare every output and gradient",
        description="Seeded numpy weights and inputs go through every backend, each in its own process; every "
                    "hidden state, output, the loss and every gradient are compared. float64 checks the algorithm "
                    "(every tensor within 1e-10), float32 checks accuracy (error against the reference's float64 "
                    "result, as a ratio to the reference's own float32 error). Exit 0 pass, 1 fail, 2 bad input.")
    compare.add_argument("target", nargs="?", default=DEFAULT_TARGET,
                         help=f"a preset (python -m parity list) or a checkpoint directory (default: {DEFAULT_TARGET})")
    compare.add_argument("--backends", default=None,
                         help=f"comma-separated backends among {','.join(FRAMEWORKS)} (default: every installed one)")
    compare.add_argument("--reference", default="torch", help="the backend others are compared with (default torch)")
    compare.add_argument("--dtype", choices=("float32", "float64", "both"), default="both",
                         help="precision(s) to run; float32 also needs the float64 reference run (default both)")
    compare.add_argument("--head", default=None, help="model head (default: the preset's; see list)")
    compare.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    compare.add_argument("--seq-len", type=int, default=128, help="sequence length (default 128)")
    compare.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and loss projection")
    compare.add_argument("--tiny", action="store_true", help="shrink a preset to a tiny config with the same switches")
    compare.add_argument("--no-backward", action="store_true", help="compare outputs only, no gradients")
    compare.add_argument("--against", default="", help="also compare third-party classes in float32 (outputs only): transformers")
    compare.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    compare.add_argument("--plot", metavar="PATH", help="draw per-layer error curves to a PNG")
    compare.add_argument("--tolerance", action="append", default=[], metavar="KEY=VALUE",
                         help="override a pass rule: float64_abs, float32_noise_ratio, float32_max_abs, float32_mean_abs")
    compare.add_argument("--workdir", help="where temporary weights and results go (default: system temp)")
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    args = build_parser().parse_args(argv)
    from backends.errors import BadInput

    from .harness import WorkerFailed

    try:
        return _list() if args.command == "list" else _compare(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WorkerFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _list() -> int:
    from rich.console import Console
    from rich.table import Table

    from backends import FAMILIES, family, installed_frameworks

    table = Table(title=f"families and presets (installed backends: {', '.join(installed_frameworks())})")
    for column in ("preset", "family", "head", "description"):
        table.add_column(column)
    for name in FAMILIES:
        spec = family(name)
        table.add_row(f"[bold]{name}[/]", name, ", ".join(spec.heads), "family")
        for preset in spec.presets.values():
            table.add_row(preset.name, preset.family, preset.head, preset.description)
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    return 0


def _compare(args) -> int:
    from rich.console import Console

    from backends import FRAMEWORKS, installed_frameworks
    from backends.errors import BadInput

    from .harness import DTYPES, resolve_target, run_parity
    from .report import print_report, write_json, write_plot
    from .tolerances import Tolerances

    if args.batch < 1 or args.seq_len < 2:
        raise BadInput("--batch must be >= 1 and --seq-len >= 2")
    backends = args.backends.split(",") if args.backends else installed_frameworks()
    for fw in backends + [args.reference]:
        if fw not in FRAMEWORKS:
            raise BadInput(f"--backends/--reference: unknown backend {fw!r} (known: {', '.join(FRAMEWORKS)})")
    tolerances = Tolerances().with_overrides(args.tolerance)
    target = resolve_target(args.target, head=args.head, tiny=args.tiny)
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    if "float32" in dtypes and "float64" not in dtypes:
        dtypes = ("float32",)
    console = Console(width=None if sys.stdout.isatty() else 140)
    report = run_parity(target, backends, reference=args.reference, dtypes=dtypes, batch=args.batch,
                        seq_len=args.seq_len, seed=args.seed, backward=not args.no_backward, tolerances=tolerances,
                        workdir=args.workdir, progress=lambda m: console.print(f"[dim]{m}[/]"),
                        against=tuple(filter(None, args.against.split(","))))
    print_report(report, console)
    if args.json:
        write_json(report, args.json)
    if args.plot:
        write_plot(report, args.plot)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
