"""Run one target through several backends, each in its own worker process, and compare.

Weights and inputs are made once with numpy (seeded, tensor by tensor) and written to safetensors;
every worker loads them through the family's rules and writes named outputs and gradients; the
parent compares them tensor by tensor, one tensor read at a time, so it never holds a model.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np

from backends import FAMILIES, family as get_family, installed_frameworks, preset as get_preset, presets
from backends.errors import BadInput
from backends.run import GRAD_PREFIX, INPUT_EMBEDS
from backends.tensorfile import SafetensorsReader, save_arrays, write_safetensors

from .errors import ParityFailure, WorkerFailed, WorkerTimeout
from .metrics import (CHUNK_ELEMENTS, TensorResult, common_names, compare_chunks, kind_of, pooled_noise_ratio,
                      ratio)
from .tolerances import Tolerances

DTYPES = ("float64", "float32")


@dataclass
class Target:
    family: str
    config: object
    head: str
    label: str
    checkpoint: object = None  # a backends.checkpoints.Checkpoint to read weights from; None: seeded random weights
    note: str = ""  # how the name was read, when not a preset or directory (a family: which preset runs)


@dataclass
class RunRecord:
    backend: str
    dtype: str
    seconds: float  # the worker's own load + forward + backward time
    max_rss_bytes: int  # the worker process's own peak (resident set)
    # seconds per phase: "start" (the process, until its module runs; first job of a process), "import" (the
    # framework), "load", "forward", "backward", "fetch" (to numpy), "write" (the results file), "exit" (the
    # process's end, last job); see parity/worker.py
    phases: dict = field(default_factory=dict)
    # a worker started ahead of its turn (the first job of a process): seconds it waited for the previous worker,
    # its framework imported, and its resident set meanwhile (which overlaps that worker's)
    waited_seconds: float = 0.0
    idle_rss_bytes: int = 0


@dataclass
class Report:
    target: str
    family: str
    head: str
    reference: str
    dtypes: list
    backends: list
    results: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    summary: list = field(default_factory=list)
    first_divergence: dict | None = None
    wall_seconds: float = 0.0
    peak_bytes_parent: int = 0
    # the harness's own phases in seconds: "files" (weights and inputs written), "comparisons" ({"BACKEND DTYPE":
    # seconds}, each beside the next backend's run), "waited_for_comparisons" (after the last worker ended); the
    # workers' phases are in `runs`
    phases: dict = field(default_factory=dict)
    # the largest sum of the parent's and its workers' resident sets (sampled every 0.2 s while workers run)
    peak_bytes_sampled: int = 0
    passed: bool = True

    @property
    def time_ratio(self) -> float:
        compute = sum(r.seconds for r in self.runs)
        return self.wall_seconds / compute if compute else math.inf

    @property
    def memory_ratio(self) -> float:
        """The run's peak over the largest worker's: at most the parent, one worker at its peak and the next
        one waiting with its framework imported (started ahead) at a time."""
        largest = max((r.max_rss_bytes for r in self.runs), default=0)
        together = max((run.max_rss_bytes + following.idle_rss_bytes
                        for run, following in zip(self.runs, self.runs[1:] + [RunRecord("", "", 0.0, 0)])), default=0)
        return (together + self.peak_bytes_parent) / largest if largest else math.inf

    def divergence_text(self) -> str:
        """The first tensor that diverges, in one line ("" when none does)."""
        d = self.first_divergence
        if not d:
            return ""
        return (f"{d['backend']} {d['dtype']} {d['tensor']} (layer {d['layer']}), "
                f"max |diff| {d['max_abs']:.3g}")

    def describe(self) -> str:
        """A compact summary: the verdict, the first divergence, one line per backend, dtype and kind."""
        lines = [f"{self.target}: {'PASSED' if self.passed else 'FAILED'} against {self.reference} "
                 f"({self.family}, head {self.head}, {', '.join(self.dtypes)})"]
        if self.first_divergence:
            lines.append(f"first divergence: {self.divergence_text()}")
        for row in self.summary:
            noise = row.get("noise_ratio")
            lines.append(f"  {row['backend']:<12} {row['dtype']} {row['kind']:<6} {row['tensors']:>4} tensors  "
                         f"max |diff| {row['max_abs']:.2e}" + ("" if noise is None else f"  noise ratio {noise:.2f}")
                         + ("" if row["passed"] else f"  FAILED (worst {row['worst']})"))
        return "\n".join(lines)

    def raise_for_failure(self) -> "Report":
        """Raise `ParityFailure` (first divergence and summary in its message) unless the run passed;
        returns the report when it did."""
        if not self.passed:
            raise ParityFailure(f"parity failed: {self.target}: first divergence: {self.divergence_text() or '-'}"
                                f"\n{self.describe()}", self)
        return self

    def to_json(self) -> dict:
        return {
            "passed": self.passed, "target": self.target, "family": self.family, "head": self.head,
            "reference": self.reference, "dtype": self.dtypes[0] if len(self.dtypes) == 1 else "both",
            "backends": self.backends, "first_divergence": self.first_divergence, "summary": self.summary,
            "cost": {"wall_seconds": self.wall_seconds, "time_ratio": self.time_ratio,
                     "memory_ratio": self.memory_ratio, "parent_peak_bytes": self.peak_bytes_parent,
                     "sampled_peak_bytes": self.peak_bytes_sampled, "phases": self.phases,
                     "runs": [vars(r) for r in self.runs]},
            "results": [r.to_json() for r in self.results],
        }


def smallest_preset(family_name: str):
    """The family's preset with the fewest parameters (the first of equals)."""
    presets_ = get_family(family_name).presets.values()
    return min(presets_, key=lambda p: parameter_count(Target(p.family, p.config, p.head, p.name)))


def targets() -> dict:
    """Every name `resolve_target` accepts besides a directory: name -> description. A family name
    stands for its smallest preset."""
    found = {}
    for family_name in FAMILIES:
        found[family_name] = f"family: its smallest preset, {smallest_preset(family_name).name}"
        found.update({name: preset.description for name, preset in get_family(family_name).presets.items()})
    return found


def resolve_target(name, head: str | None = None, tiny: bool = False, adapter: str | None = None) -> Target:
    """A preset name, a family name (its smallest preset), or a checkpoint directory in any format
    backends.checkpoints reads (transformers PyTorch or TF, PaddleNLP, our own saves). `adapter` (a
    preset or family only) adds an adapter config string's adapter (backends/adapters) to the model."""
    name = os.fspath(name)
    if os.path.isdir(name):
        if tiny:
            raise BadInput(f"--tiny shrinks a preset; {name} is a checkpoint directory (its config is used as is)")
        if adapter is not None:
            raise BadInput(f"--adapter adds a seeded adapter to a preset; {name} is a checkpoint directory "
                           "(its config's adapter field is used as is)")
        from backends.checkpoints import detect_format, open_checkpoint

        checkpoint = open_checkpoint(detect_format(name), name, head=head)
        return Target(checkpoint.family, checkpoint.config, checkpoint.head, name, checkpoint)
    note = ""
    if name in FAMILIES:
        found = smallest_preset(name)
        note = f"{name} is a family: running its smallest preset, {found.name}"
    elif name in presets():
        found = get_preset(name)
    else:
        raise BadInput(f"unknown target {name!r}: not a directory, a family or a preset "
                       f"(python -m parity list shows the {len(targets())} names)")
    spec = get_family(found.family)
    config = spec.shrink(found.config) if tiny else found.config
    head = head or found.head
    if head not in spec.heads:
        raise BadInput(f"--head {head!r}: family {found.family} has heads {', '.join(spec.heads)}")
    label = found.name + (" (tiny)" if tiny else "")
    if adapter is not None:
        if "adapter" not in {f.name for f in dataclasses.fields(config)}:
            raise BadInput(f"--adapter {adapter!r}: family {found.family} takes no adapters")
        config = config.replace(adapter=adapter)  # a ConfigError (BadInput) names a bad config string
        label += f" + {adapter}"
    return Target(found.family, config, head, label, note=note)


# families whose position ids do not start at 0: RoBERTa's count from pad_token_id + 1 (a DeFormer's as its base)
POSITION_OFFSETS = {"roberta": lambda config: config.pad_token_id + 1, "deformer": lambda config: config.position_offset}


def max_seq_len(target: Target) -> int | None:
    """The longest sequence the model takes: its position table's rows (max_position_embeddings, less
    RoBERTa's offset); Funnel's relative sinusoids are computed for any length, but its config declares
    the length it was built for in max_position_embeddings too. None: no limit (the BiLSTM)."""
    positions = getattr(target.config, "max_position_embeddings", None)
    if positions is None:
        return None
    offset = POSITION_OFFSETS.get(target.family)
    return positions - (offset(target.config) if offset else 0)


def check_run_shape(target: Target, batch: int, seq_len: int) -> None:
    """Bad input (before any worker starts) for a batch or sequence length the model cannot take."""
    for option, value, least in (("--batch", batch, 1), ("--seq-len", seq_len, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise BadInput(f"{option} {value!r}: must be an integer >= {least}")
    limit = max_seq_len(target)
    if limit is not None and seq_len > limit:
        raise BadInput(f"--seq-len {seq_len}: {target.label} takes at most {limit} positions "
                       f"(max_position_embeddings {target.config.max_position_embeddings})")


def parity_tensor(name: str, shape: tuple, seed: int) -> np.ndarray:
    """Seeded weights per tensor giving O(1) activations: matrices uniform with variance 1/fan_in,
    norm scales 1 +- noise, biases small noise.

    Every tensor has its own generator, so a model of any size is made one tensor at a time. Values
    are drawn and returned in float32, the dtype the weights file stores (no conversion on the way): the
    float64 runs cast exactly the same numbers, and a 468M-parameter model is drawn in seconds.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    uniform = rng.random(shape, dtype=np.float32) * np.float32(2) - np.float32(1)  # variance 1/3
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        uniform *= np.float32(math.sqrt(3.0 / fan_in))
        return uniform
    base = 1.0 if name.endswith("weight") and "norm" in name.lower() else 0.0
    return np.float32(base) + np.float32(0.1) * uniform


def write_parity_weights(target: Target, path: Path, seed: int) -> None:
    shapes = get_family(target.family).param_shapes(target.config, target.head)
    # float32 storage: the values are float32 numbers (see parity_tensor)
    write_safetensors(path, [(n, np.float32, s) for n, s in shapes.items()],
                      lambda n: parity_tensor(n, shapes[n], seed))


def write_checkpoint_weights(target: Target, path: Path) -> None:
    """The checkpoint's parameters in canonical names and layouts, one tensor at a time."""
    shapes = get_family(target.family).param_shapes(target.config, target.head)
    checkpoint = target.checkpoint
    params = checkpoint.params()  # optional parts the checkpoint lacks (a pooler) get the family's seeded init
    specs = [(n, np.float64 if n in checkpoint.stored and checkpoint.ref(n).dtype == np.float64 else np.float32, s)
             for n, s in shapes.items()]
    write_safetensors(path, specs, params.__getitem__)


def write_inputs(target: Target, path: Path, batch: int, seq_len: int, seed: int) -> None:
    spec = get_family(target.family)
    save_arrays(path, spec.make_inputs(target.config, target.head, batch, seq_len, np.random.default_rng(seed)))


# a worker that uses no CPU time for this long is stopped (SIGSTOP) or hung: reading weights, computing and
# writing results all take CPU time
STALL_SECONDS = 120.0
POLL_SECONDS = 0.2
# the default time limit of a worker: starting its framework, then forward and backward (about 6 flops
# per parameter and token) at a pessimistic float64 speed, far below what a busy 2-core machine does
WORKER_START_SECONDS = 300.0
SLOW_FLOPS = 3e8


def default_timeout(targets: list[Target], tokens: list[int]) -> float:
    """Seconds one worker (running every target, `tokens` per target) may take by default."""
    work = sum(6 * parameter_count(t) * n for t, n in zip(targets, tokens))
    return WORKER_START_SECONDS + work / SLOW_FLOPS


def parameter_count(target: Target) -> int:
    shapes = get_family(target.family).param_shapes(target.config, target.head)
    return sum(int(np.prod(shape)) for shape in shapes.values())


def run_worker(jobs: list[dict], workdir: Path, timeout: float | None = None,
               stall_seconds: float = STALL_SECONDS) -> list[RunRecord]:
    """Run one backend's jobs in a fresh Python process; raise with its last log lines if it fails.

    The worker is killed (and `WorkerTimeout` raised) when it runs longer than `timeout` seconds or
    uses no CPU time for `stall_seconds`; on any exception here (Ctrl-C included) it is killed too.
    It runs in its own session: a Ctrl-C in the terminal reaches the parent only, which ends it."""
    return WorkerProcess(jobs, workdir).run(timeout, stall_seconds)


class WorkerProcess:
    """One backend's worker process (`python -m parity.worker JOB.json --wait`), which may be started ahead
    of its turn: it imports its framework, then waits for `run` (a line on its stdin) before it reads any
    weights, so that one worker computes at a time while the next one's start and import overlap it.
    A worker whose stdin closes without that line (the parent ended) exits without running."""

    def __init__(self, jobs: list[dict], workdir: Path):
        self.jobs, self.workdir, self.process = jobs, workdir, None
        backend, dtype = jobs[0]["backend"], jobs[0]["dtype"]
        self.what = f"{backend} worker ({dtype})"
        self.log_path = workdir / f"log-{backend}-{dtype}.txt"

    def start(self) -> None:
        """Start the process (its framework imported, it waits for `run`). Keep the object where `close`
        reaches it first: an interruption here still leaves `self.process` set."""
        backend, dtype = self.jobs[0]["backend"], self.jobs[0]["dtype"]
        job_path = self.workdir / f"jobs-{backend}-{dtype}.json"
        job_path.write_text(json.dumps({"jobs": self.jobs}))
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                           os.environ.get("PYTHONPATH")]))}
        with open(self.log_path, "w") as log, _signals_held():
            self.started_at = time.monotonic()
            self.process = subprocess.Popen([sys.executable, "-m", "parity.worker", str(job_path), "--wait"],
                                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
            RUNNING.add(self.process.pid)

    def run(self, timeout: float | None = None, stall_seconds: float = STALL_SECONDS, then=None) -> list[RunRecord]:
        """Start the worker unless it was started ahead, let it run its jobs and wait for it (the time limit
        and the stall rule count from here); `then()` is called once it runs (to start the next worker).
        Returns the jobs' records; on any exception the worker is killed."""
        try:
            if self.process is None:
                self.start()
            try:
                self.process.stdin.write(b"run\n")
                self.process.stdin.close()
            except BrokenPipeError:  # it has ended already: its exit code and log say why
                pass
            if then is not None:
                then()
            code = _wait(self.process, self.what, timeout, stall_seconds)
            ended_at = time.monotonic()
        finally:
            self.close()
        if code != 0:
            tail = self.log_path.read_text().strip().splitlines()[-8:]
            raise WorkerFailed(f"{self.what} failed with exit code {code}:\n" + "\n".join(tail))
        records = [read_run_record(job) for job in self.jobs]
        # the process's start and end belong to its first and last job
        records[0].phases = {"start": _timing(self.jobs[0])["started_at"] - self.started_at, **records[0].phases}
        records[-1].phases["exit"] = ended_at - _timing(self.jobs[-1])["finished_at"]
        return records

    def close(self) -> None:
        """Kill the process unless it has ended (and reap it)."""
        if self.process is None:
            return
        RUNNING.discard(self.process.pid)
        if self.process.poll() is None:
            _kill(self.process)
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass


class AheadRunner:
    """The default runner: `run_worker`, except that the next worker of `plan` (the runs' job lists in
    order) is started as soon as the current one runs, so that its process start and framework import
    overlap the current one's work. `close()` kills a worker started ahead whose turn never came."""

    def __init__(self, plan: list[list[dict]], timeout: float | None):
        self.plan, self.timeout, self.ahead = plan, timeout, {}

    def __call__(self, jobs: list[dict], workdir: Path) -> list[RunRecord]:
        key = jobs[0]["output"]
        worker = self.ahead.pop(key, None) or WorkerProcess(jobs, workdir)
        keys = [planned[0]["output"] for planned in self.plan]
        following = self.plan[keys.index(key) + 1] if key in keys[:-1] else None

        def start_next():
            if following is not None:
                ahead = self.ahead[following[0]["output"]] = WorkerProcess(following, workdir)
                ahead.start()

        return worker.run(self.timeout, then=start_next)

    def close(self) -> None:
        for worker in self.ahead.values():
            worker.close()
        self.ahead.clear()


# the worker processes running now (their ids): the memory sampler adds their resident sets to the parent's
RUNNING: set[int] = set()


def _resident_bytes(pid: int | str) -> int:
    """A process's resident set now (Linux /proc; 0 when it has ended or elsewhere)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@contextmanager
def _sampled_peak(every: float = POLL_SECONDS):
    """Yield a one-item list holding the largest sum of this process's and the running workers' resident
    sets, sampled every `every` seconds by a daemon thread until the block ends."""
    peak, done = [0], threading.Event()

    def sample():
        while True:
            peak[0] = max(peak[0], _resident_bytes("self") + sum(_resident_bytes(pid) for pid in list(RUNNING)))
            if done.wait(every):
                return

    thread = threading.Thread(target=sample, name="parity-memory", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


@contextmanager
def _signals_held():
    """Ctrl-C or SIGTERM arriving inside the block acts when the block ends: interrupted inside Popen,
    the parent would lose a worker that already runs. (Python runs signal handlers in the main thread
    only; elsewhere there is nothing to hold.)"""
    held = (signal.SIGINT, signal.SIGTERM)
    current = [signal.getsignal(signum) for signum in held]
    if threading.current_thread() is not threading.main_thread() or None in current:
        yield
        return
    caught = []
    for signum in held:
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum, handler in zip(held, current):
            signal.signal(signum, handler)
        for signum in caught:
            signal.raise_signal(signum)


def _wait(process: subprocess.Popen, what: str, timeout: float | None, stall_seconds: float) -> int:
    """The worker's exit code, or WorkerTimeout when it runs too long or makes no progress."""
    started = last_progress = time.monotonic()
    cpu = _cpu_seconds(process.pid)
    while True:
        try:
            return process.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if timeout is not None and now - started > timeout:
            raise WorkerTimeout(f"{what} ran past its time limit of {timeout:g} s and was killed "
                                "(--timeout SECONDS sets the limit)")
        used = _cpu_seconds(process.pid)
        if used is None or used != cpu:
            cpu, last_progress = used, now
        elif now - last_progress > stall_seconds:
            raise WorkerTimeout(f"{what} used no CPU time for {stall_seconds:g} s (stopped or hung) and was killed")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its waited-for children (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL the worker's process group (a stopped process is killed too) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _timing(job: dict) -> dict:
    return json.loads(Path(job["output"] + ".json").read_text())


def read_run_record(job: dict) -> RunRecord:
    """The job's own time, peak memory and phases, as its worker wrote them (parity/worker.py)."""
    timing = _timing(job)
    return RunRecord(job["backend"], job["dtype"], timing["seconds"], timing["max_rss_bytes"], timing["phases"],
                     timing.get("waited", 0.0), timing.get("idle_rss_bytes", 0))


def layer_of(name: str, hidden_names: list[str]) -> str:
    """The layer a result belongs to, for grouping and for naming the first divergence."""
    if name.startswith("hidden_states."):
        index = int(name.split(".")[1])
        return hidden_names[index] if index < len(hidden_names) else name
    if name.startswith(GRAD_PREFIX):
        parts = name[len(GRAD_PREFIX):].split(".")
        cut = max((i for i, p in enumerate(parts[:-1]) if p.isdigit()), default=None)
        if cut is not None:
            return ".".join(parts[: cut + 1])
        return ".".join(parts[:-1]) or parts[0]
    return name


def forward_order(names: list[str]) -> list[str]:
    """Outputs as computed (hidden states, attentions, final outputs, loss), then gradients."""
    def key(name):
        head, _, rest = name.partition(".")
        if name.startswith(GRAD_PREFIX):
            return (4, 1 if name.endswith(INPUT_EMBEDS) else 0, 0, "")
        rank = {"hidden_states": 0, "attentions": 1, "loss": 3}.get(head, 2)
        return (rank, 0, int(rest.split(".")[0]) if rest[:1].isdigit() else 0, "")
    return sorted(names, key=key)  # stable: parameter order is kept among gradients


def compare_files(reference_path: Path, candidate_path: Path, backend: str, dtype: str, hidden_names: list[str],
                  tolerances: Tolerances, reference32_path: Path | None = None, partial: bool = False,
                  stop: threading.Event | None = None) -> list[TensorResult]:
    """float64: candidate vs reference float64. float32: plain diffs vs the reference's float32 run,
    and the noise ratio against the reference's float64 run. `partial`: the candidate (an oracle)
    holds a subset of the reference's names. Each tensor is streamed in chunks (`CHUNK_ELEMENTS` values
    of each file at a time), so the comparison holds no whole tensor of a large model. `stop`: set, the
    comparison ends (raising `Stopped`) before its next tensor."""
    reference = SafetensorsReader(reference_path)
    candidate = SafetensorsReader(candidate_path)
    reference32 = SafetensorsReader(reference32_path) if reference32_path else None
    names = common_names({n: None for n in candidate if n in reference} if partial else reference, candidate, backend)
    results = []
    for name in forward_order(names):
        if stop is not None and stop.is_set():
            raise Stopped(f"comparison of {backend} {dtype} stopped")
        shape = reference.shape(name)
        if candidate.shape(name) != shape:
            raise ValueError(f"shape {candidate.shape(name)} vs reference {shape}")
        size = math.prod(shape)
        values = candidate.chunks(name, CHUNK_ELEMENTS)
        if dtype == "float64":
            stats = compare_chunks(zip(values, reference.chunks(name, CHUNK_ELEMENTS), repeat(None)), size)
            passed = stats.max_abs <= tolerances.float64_abs * max(1.0, stats.scale)
            noise, errors = None, (None, None)
        else:  # against the reference's float32 run, with its float64 run as the truth
            stats = compare_chunks(zip(values, reference32.chunks(name, CHUNK_ELEMENTS),
                                       reference.chunks(name, CHUNK_ELEMENTS)), size)
            errors = stats.errors or (0.0, 0.0)
            noise = ratio(*errors)
            passed = math.isfinite(stats.max_abs)
            if tolerances.float32_max_abs is not None:
                passed &= stats.max_abs <= tolerances.float32_max_abs
            if tolerances.float32_mean_abs is not None:
                passed &= stats.mean_abs <= tolerances.float32_mean_abs
        results.append(TensorResult(backend, name, kind_of(name), dtype, layer_of(name, hidden_names), stats.max_abs,
                                    stats.mean_abs, stats.max_rel, stats.scale, noise, bool(passed), size, *errors))
    return results


class Stopped(Exception):
    """A comparison ended early because the run is ending (an error or an interruption elsewhere)."""


def summarize(results: list[TensorResult], tolerances: Tolerances) -> list[dict]:
    """Per backend, dtype and kind: mean/max differences and (float32) the pooled noise ratio."""
    rows = []
    groups = {}
    for r in results:
        groups.setdefault((r.backend, r.dtype, r.kind), []).append(r)
    for (backend, dtype, kind), items in groups.items():
        sizes_ok = all(r.passed for r in items)
        row = {"backend": backend, "dtype": dtype, "kind": kind, "tensors": len(items),
               "max_abs": max(r.max_abs for r in items),
               "mean_abs": float(np.mean([r.mean_abs for r in items])),
               "worst": max(items, key=lambda r: r.max_abs / max(1.0, r.scale)).tensor}
        if dtype == "float32":
            row["noise_ratio"] = pooled_noise_ratio(items)
            sizes_ok &= row["noise_ratio"] is None or row["noise_ratio"] <= tolerances.float32_noise_ratio
        row["passed"] = bool(sizes_ok)
        rows.append(row)
    return rows


def run_parity(target: Target, backends: list[str], **options) -> Report:
    """The whole run for one target (see `run_parity_many` for the options)."""
    return run_parity_many([target], backends, **options)[0]


def run_parity_many(targets: list[Target], backends: list[str], reference: str = "torch", dtypes=DTYPES,
                    batch: int = 2, seq_len: int = 128, seed: int = 0, backward: bool = True,
                    tolerances: Tolerances = Tolerances(), workdir: str | None = None, progress=None, runner=None,
                    against: tuple = (), timeout: float | None = None) -> list[Report]:
    """Weights and inputs per target, one worker process per backend and dtype running every target,
    and a streaming comparison; one report per target.

    `runner(jobs, workdir) -> [RunRecord]` runs one backend's jobs (default: one fresh process, killed
    after `timeout` seconds; None: `default_timeout`, scaled to the models).
    `against` names third-party oracles (parity/oracles.py), compared in float32 on their outputs.
    Bad input (backends, sequence length, workdir) is refused before anything is written.
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    _check_backends(backends, reference, against)
    for target in targets:
        check_run_shape(target, batch, seq_len)
        _check_oracles(target, against)
    check_workdir(workdir)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise BadInput(f"--timeout {timeout!r}: must be a positive number of seconds")
    others = [fw for fw in backends if fw != reference]
    reports = [Report(t.label, t.family, t.head, reference, list(dtypes), others + list(against)) for t in targets]
    hidden_names = [get_family(t.family).hidden_state_names(t.config, t.head) for t in targets]
    tmp = comparing = ahead = None
    stop = threading.Event()
    phases = {"files": 0.0, "comparisons": {}, "waited_for_comparisons": 0.0}
    try:  # from the mkdtemp on: an interruption at any point still removes the folder
        tmp = Path(tempfile.mkdtemp(prefix="parity-", dir=workdir))
        clock = time.perf_counter()
        files = [_write_target_files(t, tmp / f"target{i}", batch, seq_len, seed, say) for i, t in enumerate(targets)]
        phases["files"] = time.perf_counter() - clock

        def jobs_of(fw, dtype, backward=backward):
            return [{"family": t.family, "backend": fw, "config": t.config.to_dict(), "head": t.head,
                     "weights": str(weights), "inputs": str(inputs), "dtype": dtype, "backward": backward,
                     "seed": seed, "output": str(weights.parent / f"out-{fw}-{dtype}.safetensors")}
                    for t, (weights, inputs) in zip(targets, files)]

        with_ref32 = "float32" in dtypes or against
        plan = ([(reference, "float64", backward)] + [(reference, "float32", backward)] * bool(with_ref32)
                + [(fw, dtype, backward) for fw in others for dtype in dtypes]
                + [(oracle, "float32", False) for oracle in against])
        if runner is None:
            readers = [SafetensorsReader(inputs) for _, inputs in files]
            tokens = [max(int(np.prod(r.shape(name))) for name in r) for r in readers]
            runner = ahead = AheadRunner([jobs_of(*step) for step in plan],
                                         timeout=timeout or default_timeout(targets, tokens))

        def run(fw, dtype, backward=backward):
            say(f"running {fw} in {dtype}")
            jobs = jobs_of(fw, dtype, backward)
            for report, record in zip(reports, runner(jobs, tmp)):
                report.runs.append(record)
            return [Path(job["output"]) for job in jobs]

        def compare(fw, dtype, outputs, partial=False):
            say(f"comparing {fw} {dtype}")
            clock = time.perf_counter()
            for report, names, ref64_path, ref32_path, out in zip(reports, hidden_names, ref64, ref32, outputs):
                report.results += compare_files(ref64_path, out, fw, dtype, names, tolerances,
                                                reference32_path=ref32_path if dtype == "float32" else None,
                                                partial=partial, stop=stop)
                out.unlink()
            phases["comparisons"][f"{fw} {dtype}"] = time.perf_counter() - clock

        # one backend's results are compared (in this order, on one thread) while the next backend runs
        comparing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parity-compare")
        with _sampled_peak() as sampled:
            ref64 = run(reference, "float64")
            ref32 = run(reference, "float32") if with_ref32 else [None] * len(targets)
            pending = []
            for fw, dtype, with_backward in plan[1 + bool(with_ref32):]:
                for comparison in pending:  # a comparison that failed ends the run before the next worker
                    if comparison.done():
                        comparison.result()
                pending.append(comparing.submit(compare, fw, dtype, run(fw, dtype, with_backward), fw in against))
            clock = time.perf_counter()
            for comparison in pending:
                comparison.result()  # the first failure is raised
            phases["waited_for_comparisons"] = time.perf_counter() - clock
    finally:
        if ahead is not None:  # a worker started ahead of a turn that never came (an error, an interruption)
            ahead.close()
        if comparing is not None:  # after an error or interruption, a running comparison ends at its next tensor
            stop.set()
            comparing.shutdown(wait=True, cancel_futures=True)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started
    for report in reports:
        _conclude(report, tolerances)
        report.wall_seconds = elapsed / len(reports)
        report.peak_bytes_parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        report.peak_bytes_sampled = sampled[0]
        report.phases = phases  # shared by the run's targets, like its files and workers
    return reports


def check_workdir(workdir) -> None:
    """--workdir must be an existing, writable directory."""
    if workdir is None:
        return
    if not os.path.isdir(workdir):
        raise BadInput(f"--workdir {workdir}: {'not a directory' if os.path.exists(workdir) else 'no such directory'}")
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise BadInput(f"--workdir {workdir}: not writable")


def _check_backends(backends, reference, against) -> None:
    from .oracles import ORACLES

    available = installed_frameworks()
    for fw in [reference, *backends]:
        if fw not in available:
            raise BadInput(f"backend {fw!r} is not installed (installed: {', '.join(available) or 'none'})")
    for oracle in against:
        if oracle not in ORACLES:
            raise BadInput(f"--against {oracle!r}: known oracles are {', '.join(ORACLES)}")
    if not [fw for fw in backends if fw != reference] and not against:
        raise BadInput(f"nothing to compare: --backends names only the reference {reference!r}")


def _check_oracles(target: Target, against) -> None:
    from .oracles import unsupported

    for oracle in against:
        problem = unsupported(oracle, target.family, target.config, target.head)
        if problem:
            raise BadInput(f"--against {oracle}: {problem}")


def _write_target_files(target: Target, folder: Path, batch, seq_len, seed, say) -> tuple[Path, Path]:
    folder.mkdir()
    weights, inputs = folder / "weights.safetensors", folder / "inputs.safetensors"
    if target.checkpoint is not None:
        say(f"reading {target.label}")
        if target.checkpoint.absent:
            say(f"{target.label} lacks {', '.join(target.checkpoint.absent)}: the family's seeded init stands in")
        write_checkpoint_weights(target, weights)
    else:
        say(f"writing seeded weights of {target.label}")
        write_parity_weights(target, weights, seed)
    write_inputs(target, inputs, batch, seq_len, seed)
    return weights, inputs


def _conclude(report: Report, tolerances: Tolerances) -> None:
    """Summary rows, pass/fail, and the first tensor that diverges."""
    report.summary = summarize(report.results, tolerances)
    report.passed = all(row["passed"] for row in report.summary)
    first = next((r for r in report.results if not r.passed), None)
    if first is None:
        failing = [row for row in report.summary if not row["passed"]]
        first = next((r for row in failing for r in report.results
                      if (r.backend, r.dtype, r.kind) == (row["backend"], row["dtype"], row["kind"])
                      and (r.noise_ratio or 0) > tolerances.float32_noise_ratio), None)
    if first is not None:
        report.first_divergence = {"backend": first.backend, "dtype": first.dtype, "tensor": first.tensor,
                                   "layer": first.layer, "max_abs": first.max_abs}
