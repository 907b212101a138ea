"""python -m parity compare under bad input, a hung worker, and Ctrl-C at any moment."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from parity.errors import WorkerTimeout
from parity.harness import _signals_held, _wait

from ..conftest import BACKENDS, REPO

needs_two = pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two installed backends")
TINY = ["compare", "bert", "--tiny", "--seq-len", "8", "--dtype", "float64", "--backends", ",".join(BACKENDS[:2])]


def _started(stdout: str) -> bool:
    """Whether the run got as far as writing weights or starting a worker."""
    return "writing seeded weights" in stdout or re.search(r"running \w+ in float", stdout) is not None


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "parity", *args], capture_output=True, text=True, cwd=REPO, env=env)


def _start(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "parity", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=env)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def _wait_for_worker(process, deadline=120.0) -> int:
    """The pid of the CLI's first worker process, once it runs `parity.worker` (a child stopped before
    its exec would hold the parent inside vfork: that is not a worker that stops responding)."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        for child in _children(process.pid):
            try:
                with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                    if b"parity.worker" in cmdline.read():
                        return child
            except OSError:
                pass
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("no worker started")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.parametrize("args, message", [
    (["--seq-len", "41"], "--seq-len 41: bert-base-uncased (tiny) takes at most 40 positions"),
    (["--tolerance", "float64_abs=nan"], "finite number >= 0"),
    (["--tolerance", "float64_abs=-1"], "finite number >= 0"),
    (["--tolerance", "float64_abs=tiny"], "is not a number"),
    (["--tolerance", "float64_relative=1e-9"], "unknown key"),
    (["--tolerance", "float64_abs"], "expected KEY=VALUE"),
    (["--timeout", "-5"], "--timeout"),
    (["--against", "paddlenlp", "--head", "mlm"], "--against paddlenlp"),
])
def test_bad_values_exit_2_in_one_line(args, message):
    done = _cli(*TINY, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not _started(done.stdout)


@pytest.mark.parametrize("target", ["funnel-small", "funnel-xlarge"])
def test_seq_len_past_the_positions_of_a_full_size_model(target):
    done = _cli("compare", target, "--seq-len", "513")
    assert done.returncode == 2 and "takes at most 512 positions" in done.stderr


def test_bad_workdir_and_output_paths_are_refused_before_the_run(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    for args, message in [
        (["--workdir", str(tmp_path / "missing")], "no such directory"),
        (["--workdir", str(a_file)], "not a directory"),
        (["--json", str(tmp_path / "missing" / "r.json")], "--json"),
        (["--json", str(tmp_path)], "is a directory"),
        (["--plot", str(a_file / "r.png")], "--plot"),
    ]:
        started = time.monotonic()
        done = _cli(*TINY, *args)
        assert done.returncode == 2, (args, done.stdout + done.stderr)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not _started(done.stdout) and time.monotonic() - started < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@needs_two
def test_a_stopped_worker_is_killed_at_the_timeout(tmp_path):
    """SIGSTOP the first worker: the run fails after --timeout, naming the backend and dtype, and cleans up."""
    process = _start(*TINY, "--timeout", "4", "--workdir", str(tmp_path))
    worker = _wait_for_worker(process)
    os.kill(worker, signal.SIGSTOP)
    stopped = time.monotonic()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    assert f"error: {BACKENDS[0]} worker (float64) ran past its time limit of 4 s and was killed" in err, err
    assert time.monotonic() - stopped < 60, err
    assert _gone(worker) and not list(tmp_path.iterdir())


def test_a_worker_using_no_cpu_time_is_killed():
    """The stall rule: no CPU time for `stall_seconds` (here a sleeping process) ends the wait whatever the limit."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        time.sleep(1.0)  # past its start-up, which uses CPU time
        with pytest.raises(WorkerTimeout, match=r"tf worker \(float32\) used no CPU time for 1 s"):
            _wait(sleeper, "tf worker (float32)", timeout=None, stall_seconds=1.0)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_ctrl_c_while_a_worker_starts_acts_once_it_is_known():
    """Interrupted inside Popen, the parent would lose a running worker: the signal waits for the block's end."""
    # Python's own Ctrl-C handler, whatever this process inherited (a shell's background job starts with
    # SIGINT ignored, and then Python installs none)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    reached = []
    try:
        _interrupted_inside_held_block(reached)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert reached == [True]


def _interrupted_inside_held_block(reached: list) -> None:
    with pytest.raises(KeyboardInterrupt):
        with _signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a handler would run here
            reached.append(True)


# sitecustomize for the CLI process only: send it SIGINT when it first imports the module named in
# PARITY_TEST_SIGINT_ON_IMPORT (the variable is removed, so workers do not inherit it)
HOOK = """
import os, signal, sys
_module = os.environ.pop("PARITY_TEST_SIGINT_ON_IMPORT", None)
if _module:
    class _Trigger:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == _module:
                sys.meta_path.remove(_Trigger)
                os.kill(os.getpid(), signal.SIGINT)
            return None
    sys.meta_path.insert(0, _Trigger)
"""


@pytest.mark.parametrize("module", ["argparse", "numpy", "rich.console", "parity.harness"])
def test_ctrl_c_while_starting_exits_130_without_traceback(module, tmp_path):
    """The first moments of a run: Ctrl-C while its modules import (within ~0.1-0.5 s of the start)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]), "PARITY_TEST_SIGINT_ON_IMPORT": module}
    done = _cli(*TINY, "--workdir", str(work), env=env)
    assert done.returncode == 130, done.stdout + done.stderr
    assert done.stderr.strip() == "interrupted" and not _started(done.stdout)
    assert not list(work.iterdir())


@needs_two
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_during_a_worker_kills_it_and_removes_the_folder(signum, code, tmp_path):
    process = _start(*TINY, "--workdir", str(tmp_path))
    worker = _wait_for_worker(process)
    assert list(tmp_path.iterdir())  # the run's temporary folder
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code and err.strip() == "interrupted"
    assert _gone(worker) and not list(tmp_path.iterdir())
