"""`python -m parity.worker JOB.json`: one backend's jobs in a fresh process (the harness runs each backend
in its own), each through `backends.run.run_backend`, results written to safetensors.
"""
from __future__ import annotations

import json
import os
import sys
import time

# time.monotonic is one clock for every process of the machine (Linux CLOCK_MONOTONIC): the parent subtracts
# the moment it started this process from this one to measure the process start
STARTED_AT = time.monotonic()
_clock = time.perf_counter()  # a backend's own time includes starting its framework (first job)


# a worker started ahead of its turn (--wait): seconds and peak memory while it waited, for its first job
_waited = {}


def main(job_path: str, wait: bool = False) -> int:
    """Run the jobs listed in a JSON file {"jobs": [...]} one after the other (see `execute`). `wait`:
    import the framework, then wait for a line "run" on stdin (the harness starts the next worker while
    the current one runs); stdin closed without it, exit 3 without running."""
    global _clock

    jobs = json.loads(open(job_path).read())["jobs"]
    if wait:
        _import_framework(jobs[0]["backend"])
        imported = time.perf_counter() - _clock
        clock = time.perf_counter()
        _waited.update(idle_rss_bytes=_max_rss())
        if sys.stdin.readline().strip() != "run":
            return 3
        _waited.update(waited=time.perf_counter() - clock)
        _clock = time.perf_counter() - imported  # the wait is neither the backend's time nor the harness's
    for job in jobs:
        execute(job)
    return 0


def _import_framework(backend: str) -> None:
    from backends import framework

    from .oracles import RUNNERS

    if backend not in RUNNERS:  # an oracle imports its library when it runs
        framework(backend)


def execute(job: dict) -> None:
    """Run a job {family, backend, config, head, weights, inputs, dtype, backward, seed, output}; write
    its results to `output` (safetensors) and its timing, phases and peak memory to `output`.json.

    The timing is the backend's own work: starting its framework (first job of a process), loading
    the weights, forward and backward; writing the results is the harness's cost. The phases split it:
    "import" (the framework), "load", "forward", "backward", "fetch" (results to numpy; an oracle's whole
    run is "run"), then "write" (the results file, the harness's)."""
    global _clock

    from backends import family
    from backends.run import run_backend
    from backends.tensorfile import SafetensorsReader, save_arrays

    from .oracles import RUNNERS

    _import_framework(job["backend"])  # once per process; timed apart from loading the weights
    spec = family(job["family"])
    config = spec.config_class.from_dict(job["config"])
    oracle = RUNNERS.get(job["backend"])
    phases = {"import": time.perf_counter() - _clock}
    params = SafetensorsReader(job["weights"])
    inputs = dict(SafetensorsReader(job["inputs"]))
    if oracle is not None:
        clock = time.perf_counter()
        results = oracle(job["family"], config, job["head"], params, inputs, job["dtype"])
        phases["run"] = time.perf_counter() - clock
    else:
        results = run_backend(job["family"], job["backend"], config, job["head"], params, inputs, job["dtype"],
                              backward=job["backward"], seed=job["seed"], timings=phases)
    elapsed = time.perf_counter() - _clock
    clock = time.perf_counter()
    save_arrays(job["output"], results, metadata={"backend": job["backend"], "dtype": job["dtype"]})
    phases["write"] = time.perf_counter() - clock
    waited = _waited.pop("waited", 0.0)
    with open(job["output"] + ".json", "w") as out:
        json.dump({"seconds": elapsed, "max_rss_bytes": _max_rss(), "phases": phases, "waited": waited,
                   "idle_rss_bytes": _waited.get("idle_rss_bytes", 0), "started_at": STARTED_AT,
                   "finished_at": time.monotonic()}, out)
    _clock = time.perf_counter()


def _max_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    code = main(sys.argv[1], wait="--wait" in sys.argv[2:])
    # every result is written and closed: skip the interpreter's teardown (freeing a model of several GB
    # object by object, the frameworks' exit hooks: seconds the harness would wait for)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
