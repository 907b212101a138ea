"""python -m tasks.train.tf_launch --nproc-per-node N [--hosts H1,H2 --node-rank R --port P] finetune ... --backend tf

TensorFlow ships no launcher: MultiWorkerMirroredStrategy reads its cluster from TF_CONFIG. This starts the
N workers of this host, each `python -m tasks ARGS` with TF_CONFIG naming every worker of every host and its
own index, and waits for them. When one fails, the others are stopped (as torchrun and
paddle.distributed.launch do) and its exit code is returned; Ctrl-C stops them all (exit 130).

One host: the workers listen on free local ports. Several hosts: run the same command on each with
--hosts (every host, in the same order everywhere), --node-rank (this host's place in --hosts) and --port
(worker i of a host listens on port P + i); worker 0 of the first host is the chief (rank 0, writes the files).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 10


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def free_ports(count: int) -> list[int]:
    """Ports no process listens on now (bound and released together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cluster(args) -> list[str]:
    """host:port of every worker, host by host."""
    if args.hosts is None:
        return [f"localhost:{port}" for port in free_ports(args.nproc_per_node)]
    return [f"{host}:{args.port + local}" for host in args.hosts.split(",") for local in range(args.nproc_per_node)]


def worker_environment(workers: list[str], index: int) -> dict:
    return {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                                   "task": {"type": "worker", "index": index}})}


def stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv=None) -> int:
    parser = Parser(prog="python -m tasks.train.tf_launch", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc-per-node", type=int, required=True, help="workers on this host")
    parser.add_argument("--hosts", help="several hosts: every host's address, comma-separated, the same order on each")
    parser.add_argument("--node-rank", type=int, default=0, help="this host's place in --hosts (default 0)")
    parser.add_argument("--port", type=int, default=29600, help="several hosts: worker i listens on PORT + i")
    parser.add_argument("-m", "--module", default="tasks", help="the module each worker runs (default tasks)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the module's arguments (finetune ...)")
    args = parser.parse_args(argv)
    hosts = args.hosts.split(",") if args.hosts else ["localhost"]
    if args.nproc_per_node < 1:
        parser.error("--nproc-per-node must be positive")
    if not 0 <= args.node_rank < len(hosts):
        parser.error(f"--node-rank {args.node_rank} is not a place in the {len(hosts)} --hosts")
    if not args.command:
        parser.error("give the python -m tasks arguments (finetune ... --backend tf)")
    workers = cluster(args)
    first = args.node_rank * args.nproc_per_node
    processes = [subprocess.Popen([sys.executable, "-m", args.module, *args.command],
                                  env=worker_environment(workers, first + local))
                 for local in range(args.nproc_per_node)]
    try:
        while True:
            codes = [process.poll() for process in processes]
            failed = [code for code in codes if code not in (None, 0)]
            if failed:
                stop(processes)
                return failed[0]
            if all(code == 0 for code in codes):
                return 0
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        stop(processes)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
