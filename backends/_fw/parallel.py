"""Data parallelism, framework-free: which process this is (from each framework's launcher), which rows of a
micro-batch it holds, and the process group of its framework (backends/_fw/<key>/parallel.py).

Each framework's own engine carries the collectives: torch.distributed (torchrun; gloo on CPU, NCCL on GPU),
paddle.distributed (python -m paddle.distributed.launch; gloo on CPU, NCCL on GPU) and TensorFlow's
MultiWorkerMirroredStrategy (TF_CONFIG, one worker per process). A group offers two sums over all processes:
of the accumulated gradients (with the update's loss) and of numpy arrays (evaluation outputs, each process
filling its own rows of a zero array, so the sum is exact). Every process holds the whole model and applies
the same summed gradients, so the weights stay identical without a broadcast.

The shard rule: a micro-batch of n rows (the rows one process would take) is cut into `size` contiguous
runs, np.array_split's; process r takes run r. Its examples keep their positions in the micro-batch, which
key their dropout masks (backends/_fw/dropout.py), so N processes compute what one process computes.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import BadInput

# backend -> the launcher that starts its processes, and the variables it sets: (rank, size)
LAUNCHERS = {"torch": ("torchrun", ("RANK", "WORLD_SIZE")),
             "paddle": ("python -m paddle.distributed.launch", ("PADDLE_TRAINER_ID", "PADDLE_TRAINERS_NUM")),
             "tf": ("TF_CONFIG", None)}
TF_TRAINING_TASKS = ("chief", "worker")  # MultiWorkerMirroredStrategy's ranks: the chief first, then the workers
DEFAULT_TIMEOUT = 1800.0  # seconds a collective waits for the other processes (torch's and transformers' default)


class LaunchError(BadInput, ValueError):
    """A launch environment this backend cannot train in (another framework's launcher, a damaged TF_CONFIG)."""


class CollectiveFailed(RuntimeError):
    """A collective did not complete: another process died, hung past the timeout, or cannot be reached.
    The run stops (exit 2); checkpoints written before stay valid, nothing is half-written."""

    exit_code = 2


@dataclass(frozen=True)
class Layout:
    """This process's place: rank `rank` of `size` processes (rank 0 writes the files)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> np.ndarray:
        """Positions (in a micro-batch of n rows) of the rows this process holds: its contiguous run."""
        return np.array_split(np.arange(n), self.size)[self.rank]

    def describe(self) -> str:
        return f"process {self.rank} of {self.size}"


def _integer(environ, name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"environment variable {name}={value!r} is not an integer") from None


def _tf_layout(text: str) -> Layout:
    """Rank and size of TF_CONFIG (MultiWorkerMirroredStrategy's: chief, then workers, each one process)."""
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, index = task["type"], int(task["index"])
        sizes = {kind: len(cluster.get(kind, ())) for kind in TF_TRAINING_TASKS}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LaunchError(f"TF_CONFIG is not a cluster and task ({type(exc).__name__}: {exc}); expected "
                          '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}') from None
    unknown = sorted(set(cluster) - set(TF_TRAINING_TASKS))
    if unknown or task_type not in TF_TRAINING_TASKS:
        raise LaunchError(f"TF_CONFIG: the tf backend trains with MultiWorkerMirroredStrategy, whose cluster holds "
                          f"chief and worker tasks only, not {', '.join(unknown) or task_type}")
    if not 0 <= index < sizes[task_type]:
        raise LaunchError(f"TF_CONFIG: task {task_type} {index} is not in the cluster's {sizes[task_type]} {task_type}s")
    rank = index if task_type == "chief" else sizes["chief"] + index
    return Layout(rank, sizes["chief"] + sizes["worker"])


def launched(environ=None) -> dict:
    """backend -> Layout, for each framework launcher whose variables are set."""
    environ = os.environ if environ is None else environ
    found = {}
    for backend, (_, names) in LAUNCHERS.items():
        if names is None:
            if environ.get("TF_CONFIG"):
                found[backend] = _tf_layout(environ["TF_CONFIG"])
        elif all(name in environ for name in names):
            rank, size = (_integer(environ, name) for name in names)
            if not 0 <= rank < size:
                raise LaunchError(f"{names[0]}={rank} is not a rank of {names[1]}={size} processes")
            found[backend] = Layout(rank, size)
    return found


def layout(backend: str, environ=None) -> Layout:
    """This process's Layout when `backend` trains: its launcher's, or one process; LaunchError when another
    framework's launcher started several processes (they would each train alone and write the same files)."""
    found = launched(environ)
    for other, where in found.items():
        if other != backend and where.size > 1 and found.get(backend, Layout()).size == 1:
            raise LaunchError(f"{LAUNCHERS[other][0]} started {where.size} processes, but --backend {backend} is "
                              f"launched with {LAUNCHERS[backend][0]}" + (
                                  " (see README: data-parallel training)" if backend == "tf" else ""))
    return found.get(backend, Layout())


class SingleProcess:
    """The group of one process: every sum is the process's own value, nothing is communicated."""

    layout = Layout()

    def sum_gradients(self, runner, loss: float) -> float:
        return loss

    def sum_arrays(self, arrays: list) -> list:
        return list(arrays)

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


def process_group(backend: str, where: Layout, timeout: float = DEFAULT_TIMEOUT, device: str = "cpu"):
    """The framework's process group for `where` (SingleProcess for one process); joins the other processes."""
    if where.size == 1:
        return SingleProcess()
    module = importlib.import_module(f"backends._fw.{backend}.parallel")
    return module.ProcessGroup(where, timeout, device)


def gather_rows(group, local: dict, total: int, rows: np.ndarray) -> dict:
    """Every process's `local` outputs (this process's `rows` of `total`) as whole arrays, on every process:
    each fills its rows of a zero array and the group sums them (x + 0 is exact)."""
    names = sorted(local)
    whole = []
    for name in names:
        array = np.zeros((total,) + local[name].shape[1:], dtype=local[name].dtype)
        array[rows] = local[name]
        whole.append(array)
    return dict(zip(names, group.sum_arrays(whole)))


def failure(where: Layout, what: str, exc: BaseException) -> CollectiveFailed:
    """The one-line error of a collective that failed with `exc`."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = lines[0] if lines else type(exc).__name__
    return CollectiveFailed(f"{where.describe()}: summing {what} over the processes failed (another process died, "
                            f"hung past --ddp-timeout or cannot be reached): {detail[:300]}")


class Watchdog:
    """For a framework whose collectives take no timeout (Paddle's gloo group): a collective not done after
    `timeout` seconds ends the process with CollectiveFailed's one-line error and exit 2 (the collective
    blocks in C++, where no exception reaches it)."""

    def __init__(self, where: Layout, timeout: float):
        self.where, self.timeout = where, timeout

    def __call__(self, what: str):
        return _Watch(self, what)


class _Watch:
    def __init__(self, dog: Watchdog, what: str):
        self.dog, self.what = dog, what

    def expire(self):
        message = (f"{self.dog.where.describe()}: summing {self.what} over the processes did not finish in "
                   f"{self.dog.timeout:g} s (--ddp-timeout); another process died or hung")
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(CollectiveFailed.exit_code)

    def __enter__(self):
        self.timer = threading.Timer(self.dog.timeout, self.expire)
        self.timer.daemon = True
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        return False
