"""python -m parity compare TARGET | list: prove that ports compute the same function."""
# Only builtin modules load before `main` installs the interrupt handlers: a Ctrl-C from then on, even
# while the heavy modules import, ends with exit code 130, no traceback and nothing left behind.
import signal
import sys

from backends import FRAMEWORKS

DEFAULT_TARGET = "funnel-xlarge"
# signal -> exit code (128 + the signal's number, as a shell reports a process it ended)
STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: unwinds through every `finally` (workers killed, temporary folder removed)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = STOP_SIGNALS[signum]


def _stop(signum, frame):
    for other in STOP_SIGNALS:  # a second signal must not interrupt the cleanup
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m parity", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the targets compare accepts: families, their heads, and presets")
    compare = sub.add_parser(
        "compare", help="run the same weights and inputs through several backends and compare every output and gradient",
        description="Seeded numpy weights and inputs go through every backend, each in its own process; every "
                    "hidden state, output, the loss and every gradient are compared. float64 checks the algorithm "
                    "(every tensor within 1e-10), float32 checks accuracy (error against the reference's float64 "
                    "result, as a ratio to the reference's own float32 error). Exit 0 pass, 1 fail, 2 bad input, "
                    "130 interrupted.")
    compare.add_argument("target", nargs="?", default=DEFAULT_TARGET,
                         help="a preset, a family (its smallest preset; python -m parity list shows both) or a "
                              f"checkpoint directory (default: {DEFAULT_TARGET})")
    compare.add_argument("--backends", default=None,
                         help=f"comma-separated backends among {','.join(FRAMEWORKS)} (default: every installed one)")
    compare.add_argument("--reference", default="torch", help="the backend others are compared with (default torch)")
    compare.add_argument("--dtype", choices=("float32", "float64", "both"), default="both",
                         help="precision(s) to run; float32 also needs the float64 reference run (default both)")
    compare.add_argument("--head", default=None, help="model head (default: the preset's; see list)")
    compare.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    compare.add_argument("--seq-len", type=int, default=128,
                         help="sequence length, at most the model's positions (default 128)")
    compare.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and loss projection")
    compare.add_argument("--tiny", action="store_true", help="shrink a preset to a tiny config with the same switches")
    compare.add_argument("--no-backward", action="store_true", help="compare outputs only, no gradients")
    compare.add_argument("--adapter", metavar="CONFIG", default=None,
                         help="add an adapter to the preset's model, as the adapters library's config string: "
                              "seq_bn, double_seq_bn, par_bn, lora, with overrides such as seq_bn[reduction_factor=8] "
                              "or lora[r=4,alpha=16]")
    compare.add_argument("--against", default="",
                         help="also compare third-party classes in float32 (outputs only): transformers, paddlenlp")
    compare.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    compare.add_argument("--plot", metavar="PATH", help="draw per-layer error curves to a PNG")
    compare.add_argument("--tolerance", action="append", default=[], metavar="KEY=VALUE",
                         help="override a pass rule: float64_abs, float32_noise_ratio, float32_max_abs, "
                              "float32_mean_abs (a finite number >= 0)")
    compare.add_argument("--workdir", help="an existing directory for temporary weights and results "
                                           "(default: system temp)")
    compare.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                         help="kill a backend's worker process that runs longer (default: scaled to the model, "
                              "5 minutes plus its forward and backward at a slow 0.3 GFLOP/s); a worker that "
                              "uses no CPU time for 2 minutes is killed whatever the limit")
    return parser


def main(argv=None) -> int:
    previous = {signum: signal.signal(signum, _stop) for signum in STOP_SIGNALS}
    try:
        return _main(argv)
    except Interrupted as exc:
        print("interrupted", file=sys.stderr)
        return exc.exit_code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv) -> int:
    import os

    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    args = build_parser().parse_args(argv)
    from backends.errors import BadInput

    from .errors import WorkerFailed

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

    from .harness import targets

    described = targets()  # exactly the names compare accepts
    table = Table(title=f"compare TARGET: each name below, or a checkpoint directory "
                        f"(installed backends: {', '.join(installed_frameworks())})")
    for column in ("target", "family", "head", "description"):
        table.add_column(column)
    for name in FAMILIES:
        spec = family(name)
        table.add_row(f"[bold]{name}[/]", name, ", ".join(spec.heads), described[name])
        for preset in spec.presets.values():
            table.add_row(preset.name, preset.family, preset.head, described[preset.name])
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    return 0


def _compare(args) -> int:
    from rich.console import Console

    from .api import compare
    from .report import check_writable, print_report, write_json, write_plot

    if args.json:
        check_writable(args.json, "--json")
    if args.plot:
        check_writable(args.plot, "--plot", needs="matplotlib")
    console = Console(width=None if sys.stdout.isatty() else 140)
    report = compare(args.target, args.backends if args.backends is not None else None,
                     reference=args.reference, dtype=args.dtype, head=args.head, tiny=args.tiny, batch=args.batch,
                     seq_len=args.seq_len, seed=args.seed, backward=not args.no_backward, tolerances=args.tolerance,
                     against=args.against, workdir=args.workdir, timeout=args.timeout, adapter=args.adapter,
                     progress=lambda m: console.print(f"[dim]{m}[/]"))
    print_report(report, console)
    if args.json:
        write_json(report, args.json)
    if args.plot:
        write_plot(report, args.plot)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
