"""paddle.distributed process group (backends/_fw/parallel.py): gloo on CPU, NCCL on GPU, started by
python -m paddle.distributed.launch (PADDLE_TRAINER_ID, PADDLE_TRAINERS_NUM, PADDLE_MASTER).

Paddle's gloo group takes no timeout (core.ProcessGroupGloo.create(store, rank, size, gid)): a collective
that waits longer than --ddp-timeout ends the process through backends/_fw/parallel.Watchdog.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.distributed as dist

from ..parallel import Watchdog, failure

COLLECTIVE_ERRORS = (RuntimeError, OSError, ValueError, AssertionError)


class ProcessGroup:
    """The default group of paddle.distributed.init_parallel_env()."""

    def __init__(self, layout, timeout: float, device: str = "cpu"):
        self.layout = layout
        self.watch = Watchdog(layout, timeout)
        paddle.set_device("gpu" if device == "gpu" else "cpu")
        try:
            with self.watch("nothing yet (joining the group)"):
                dist.init_parallel_env()
        except COLLECTIVE_ERRORS as exc:
            raise failure(layout, "nothing yet (joining the group)", exc) from None
        if dist.get_world_size() != layout.size or dist.get_rank() != layout.rank:
            raise failure(layout, "nothing yet", RuntimeError(
                f"paddle sees rank {dist.get_rank()} of {dist.get_world_size()}"))
        self.barrier()

    def _all_reduce(self, tensors: list, what: str) -> None:
        try:
            with self.watch(what):
                for tensor in tensors:
                    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        except COLLECTIVE_ERRORS as exc:
            raise failure(self.layout, what, exc) from None

    def sum_gradients(self, runner, loss: float) -> float:
        """Sum every parameter's accumulated gradient and the update's loss over the processes; a parameter
        some process has a gradient for gets one everywhere (zeros where it had none), as in one process."""
        params = list(runner.params.values())
        flags = paddle.to_tensor(np.array([loss] + [p.grad is not None for p in params], dtype=np.float64))
        self._all_reduce([flags], "the update's loss")
        values = flags.numpy()
        present = (values[1:] > 0).tolist()
        for param, there in zip(params, present):
            if there and param.grad is None:  # paddle has no settable .grad: the gradient variable is set
                param._set_grad_ivar(paddle.zeros_like(param))
        self._all_reduce([p.grad for p, there in zip(params, present) if there], "the gradients")  # in place
        return float(values[0])

    def sum_arrays(self, arrays: list) -> list:
        tensors = [paddle.to_tensor(np.ascontiguousarray(a)) for a in arrays]
        self._all_reduce(tensors, "the evaluation outputs")
        return [t.numpy() for t in tensors]

    def barrier(self) -> None:
        self._all_reduce([paddle.zeros([1])], "a barrier")

    def close(self) -> None:
        dist.destroy_process_group()
