"""torch.distributed process group (backends/_fw/parallel.py): gloo on CPU, NCCL on GPU, started by torchrun.

The gradients are summed with all_reduce once per update, after the accumulation, not by
DistributedDataParallel: DDP reduces in its backward hooks at every micro-batch (no_sync aside) and needs
every process to run every micro-batch, which the short last batch of an epoch, split over the processes,
does not give every process.
"""
from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
# torch.distributed.nn binds `group=group.WORLD` as default arguments (ten functions) when first imported; torch._dynamo
# imports it, and torch.optim imports torch._dynamo. Imported after init_process_group, those defaults would hold the
# group, destroy_process_group could not free it, and its gloo threads would be torn down during interpreter exit,
# which now and then aborts a finished run ("terminate called without an active exception", SIGABRT). Imported
# here, before any group exists, the defaults are None.
import torch.distributed.nn  # noqa: F401

from ..parallel import failure

COLLECTIVE_ERRORS = (RuntimeError, ValueError, dist.DistError)


class ProcessGroup:
    """The default process group of torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""

    def __init__(self, layout, timeout: float, device: str = "cpu"):
        self.layout = layout
        self.device = torch.device("cpu")
        if device == "gpu":  # one GPU per process: torchrun's LOCAL_RANK picks it
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        try:
            dist.init_process_group("nccl" if device == "gpu" else "gloo", timeout=timedelta(seconds=timeout),
                                    rank=layout.rank, world_size=layout.size)
        except COLLECTIVE_ERRORS as exc:
            raise failure(layout, "nothing yet (joining the group)", exc) from None
        self.barrier()

    def _all_reduce(self, tensors: list, what: str) -> None:
        try:
            for work in [dist.all_reduce(t, op=dist.ReduceOp.SUM, async_op=True) for t in tensors]:
                work.wait()
        except COLLECTIVE_ERRORS as exc:
            raise failure(self.layout, what, exc) from None

    def sum_gradients(self, runner, loss: float) -> float:
        """Sum every parameter's accumulated gradient and the update's loss over the processes; a parameter
        some process has a gradient for gets one everywhere (zeros where it had none), as in one process."""
        params = list(runner.params.values())
        flags = torch.tensor([loss] + [p.grad is not None for p in params], dtype=torch.float64, device=self.device)
        self._all_reduce([flags], "the update's loss")
        present = (flags[1:] > 0).tolist()
        for param, there in zip(params, present):
            if there and param.grad is None:
                param.grad = torch.zeros_like(param)
        self._all_reduce([p.grad for p, there in zip(params, present) if there], "the gradients")
        return flags[0].item()

    def sum_arrays(self, arrays: list) -> list:
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
        self._all_reduce(tensors, "the evaluation outputs")
        return [t.cpu().numpy() for t in tensors]

    def barrier(self) -> None:
        self._all_reduce([torch.zeros(1, device=self.device)], "a barrier")

    def close(self) -> None:
        dist.destroy_process_group()
