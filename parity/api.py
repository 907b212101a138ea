"""Parity checks from Python, e.g. in a project's own CI:

    from parity import compare
    report = compare("funnel-small", backends=("torch", "paddle"), dtype="float64", tiny=True, seq_len=16)
    report.raise_for_failure()  # ParityFailure (an AssertionError) naming the first divergence
    print(report.describe())

`compare` takes what `python -m parity compare` takes and refuses bad input the same way
(`backends.errors.BadInput`), before any worker starts.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from backends import FRAMEWORKS, installed_frameworks
from backends.errors import BadInput

from .harness import DTYPES, Report, resolve_target, run_parity
from .tolerances import Tolerances

DTYPE_CHOICES = ("float64", "float32", "both")


def compare(target, backends=None, *, reference: str = "torch", dtype: str = "both", head: str | None = None,
            tiny: bool = False, batch: int = 2, seq_len: int = 128, seed: int = 0, backward: bool = True,
            tolerances=None, against=(), workdir=None, timeout: float | None = None, progress=None,
            adapter: str | None = None) -> Report:
    """Run `target` (a preset, a family name or a checkpoint directory) through `backends` (default:
    every installed one) and compare every output and gradient with `reference`; returns the Report
    (`report.passed`, `report.raise_for_failure()`, `report.describe()`, `report.to_json()`).

    dtype: "float64" (same algorithm: every tensor within 1e-10), "float32" (as accurate as the
    reference) or "both". tolerances: a `Tolerances`, a mapping {key: value} or ["key=value", ...]
    overriding the pass rules. against: third-party oracles ("transformers", "paddlenlp"). timeout:
    seconds a worker may run (default scaled to the model). progress: called with one line per step.
    adapter: an adapter config string ("seq_bn", "lora[r=4]"; backends/adapters) added to a preset's model,
    its parameters seeded like the others.
    Raises BadInput for bad input, WorkerFailed when a backend's process fails or times out."""
    backends = _names(backends, "backends") if backends is not None else installed_frameworks()
    for fw in [*backends, reference]:
        if fw not in FRAMEWORKS:
            raise BadInput(f"--backends/--reference: unknown backend {fw!r} (known: {', '.join(FRAMEWORKS)})")
    if dtype not in DTYPE_CHOICES:
        raise BadInput(f"--dtype {dtype!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    if not isinstance(tolerances, Tolerances):
        tolerances = Tolerances().with_overrides(tolerances or ())
    if workdir is not None:
        workdir = os.fspath(workdir)
    resolved = resolve_target(target, head=head, tiny=tiny, adapter=adapter)
    say = progress or (lambda message: None)
    if resolved.note:
        say(resolved.note)
    return run_parity(resolved, backends, reference=reference, dtypes=DTYPES if dtype == "both" else (dtype,),
                      batch=batch, seq_len=seq_len, seed=seed, backward=backward, tolerances=tolerances,
                      workdir=workdir, progress=progress, against=tuple(_names(against, "against")),
                      timeout=timeout)


def _names(value, option: str) -> list[str]:
    """"a,b" or ["a", "b"] -> ["a", "b"]."""
    if isinstance(value, str):
        return [name for name in value.split(",") if name]
    if isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
        raise BadInput(f"--{option} {value!r}: expected names, e.g. 'torch,paddle' or ('torch', 'paddle')")
    return list(value)
