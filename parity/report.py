"""Show a parity report: rich tables grouped by layer, JSON, and per-layer error plots."""
from __future__ import annotations

import importlib.util
import json
import math
import tempfile
from pathlib import Path

from backends.errors import BadInput
from backends.tensorfile import atomic_path

from .harness import Report


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (value == 0 or not math.isfinite(value)):
        return str(value)
    return f"{value:.2e}" if isinstance(value, float) else str(value)


def layer_rows(report: Report, dtype: str, kind: str) -> list[tuple[str, dict]]:
    """(layer, {backend: worst result}) in forward order."""
    order, table = [], {}
    for r in report.results:
        if r.dtype != dtype or r.kind != kind:
            continue
        if r.layer not in table:
            order.append(r.layer)
            table[r.layer] = {}
        best = table[r.layer].get(r.backend)
        if best is None or r.max_abs > best.max_abs or not r.passed:
            table[r.layer][r.backend] = r
    return [(layer, table[layer]) for layer in order]


def print_report(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for dtype in report.dtypes:
        for kind in ("output", "grad"):
            rows = layer_rows(report, dtype, kind)
            if not rows:
                continue
            measure = "max |diff| vs reference float64" if dtype == "float64" else "max |diff| vs reference float32"
            table = Table(title=f"{report.target}: {kind}s, {dtype} ({measure}, worst tensor per layer)")
            table.add_column("layer")
            for backend in report.backends:
                table.add_column(backend, justify="right")
            for layer, cells in rows:
                table.add_row(layer, *[_cell(cells.get(b)) for b in report.backends])
            console.print(table)
    summary = Table(title=f"{report.target}: summary against {report.reference}")
    for column in ("backend", "dtype", "kind", "tensors", "mean |diff|", "max |diff|", "noise ratio", "worst tensor",
                   "passed"):
        summary.add_column(column)
    for row in report.summary:
        summary.add_row(row["backend"], row["dtype"], row["kind"], str(row["tensors"]), _fmt(row["mean_abs"]),
                        _fmt(row["max_abs"]), _fmt(row.get("noise_ratio")), row["worst"],
                        "[green]yes[/]" if row["passed"] else "[red]NO[/]")
    console.print(summary)
    if report.first_divergence:
        console.print(f"[red]first divergence[/]: {report.divergence_text()}")
    console.print(f"cost: wall {report.wall_seconds:.1f} s = {report.time_ratio:.2f} x the backends' own "
                  f"load+forward+backward time; peak memory {report.memory_ratio:.2f} x the largest worker")
    for line in cost_lines(report):
        console.print(f"  {line}", highlight=False)
    console.print("[green]PASSED[/]" if report.passed else "[red]FAILED[/]")


def cost_lines(report: Report) -> list[str]:
    """The run's phases in seconds: the harness's files and comparisons, then one line per worker (its own
    time, each phase and its peak resident memory)."""
    phases = report.phases
    compared = phases.get("comparisons", {})
    lines = [f"files {phases.get('files', 0.0):.1f} s; comparisons {sum(compared.values()):.1f} s "
             f"(beside the next backend's run; {phases.get('waited_for_comparisons', 0.0):.1f} s after the last); "
             f"parent peak {report.peak_bytes_parent / 2**30:.2f} GiB, all processes {report.peak_bytes_sampled / 2**30:.2f} "
             f"GiB (sampled); workers:"]
    for run in report.runs:
        steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in run.phases.items())
        lines.append(f"{run.backend} {run.dtype}: own {run.seconds:.1f} s ({steps}), peak {run.max_rss_bytes / 2**30:.2f} GiB")
    return lines


def _cell(result) -> str:
    if result is None:
        return "-"
    text = _fmt(result.max_abs)
    return text if result.passed else f"[red]{text}[/]"


def check_writable(path, option: str, needs: str | None = None) -> None:
    """Bad input unless a file can be written at `path` (and module `needs` is installed): checked
    before a run, not found out after it."""
    path = Path(path)
    if needs and importlib.util.find_spec(needs) is None:
        raise BadInput(f"{option} needs {needs}, which is not installed")
    if path.is_dir():
        raise BadInput(f"{option} {path}: is a directory")
    if not path.parent.is_dir():
        raise BadInput(f"{option} {path}: no such directory {path.parent}")
    try:  # what the writer does: a temporary file beside `path`, renamed onto it
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.check-"):
            pass
    except OSError as exc:
        raise BadInput(f"{option} {path}: cannot write there ({exc.strerror})") from None


def write_json(report: Report, path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(report.to_json(), indent=1))


def write_plot(report: Report, path) -> None:
    """Per-layer max |diff| curves, one panel per dtype and kind, one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, k) for d in report.dtypes for k in ("output", "grad") if layer_rows(report, d, k)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * max(1, len(panels))), squeeze=False)
    for ax, (dtype, kind) in zip(axes[:, 0], panels):
        rows = layer_rows(report, dtype, kind)
        for backend in report.backends:
            values = [max(cells[backend].max_abs, 1e-20) if backend in cells else math.nan for _, cells in rows]
            ax.semilogy(range(len(rows)), values, marker=".", label=backend)
        ax.set_title(f"{report.target}: {kind}s, {dtype}")
        ax.set_ylabel("max |diff|")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([layer for layer, _ in rows], rotation=90, fontsize=6)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
