"""The framework registry: one package per framework, `backends/_fw/<key>/`, and what each one declares.

A framework package holds
    __init__.py   the adapter surface (`contract.Adapter`): dtype, seeding, numpy in and out, parameters,
                  gradients, the parity loss, activations, tanh/sigmoid
    nn.py         torch-like layers where the framework's own differ from torch's (paddle, tf)
    train.py      the op set the framework-free losses call (`contract.TrainOps`), SharedDropout and the
                  fine-tuning `Runner` (`contract.Runner`); it imports tasks.train, so only training loads it
and the ports of a family are `backends/<family>/modeling_<key>.py`. Nothing here imports a framework.
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

# Linear kernel layouts; the canonical one (transformers' PyTorch state_dict) is torch's
OUT_IN = "[out, in]"
IN_OUT = "[in, out]"
CANONICAL_LINEAR_KERNEL = OUT_IN


@dataclass(frozen=True)
class Framework:
    """What a framework declares, framework-free (the registry row of `backends/_fw/<key>/`)."""

    key: str  # folder name, `modeling_<key>.py` suffix, --backend value
    package: str  # the Python package to import
    linear_kernel: str  # how its ports store a Linear weight (OUT_IN or IN_OUT); the port rules follow it


# In import order: a process that uses several frameworks imports them in this order (importing paddle
# after tensorflow segfaults, paddle 3.3.1 with tensorflow 2.21; the other order works).
FRAMEWORKS = {fw.key: fw for fw in (
    Framework("torch", "torch", OUT_IN),
    Framework("paddle", "paddle", IN_OUT),  # paddle.nn.Linear stores [in, out]
    Framework("tf", "tensorflow", IN_OUT),  # our nn.Linear keeps Keras' Dense layout
)}

# hidden_act values every port implements (transformers' names)
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh")


class ContextFlag:
    """A boolean that a `with` block sets for the code it runs (a contextvars variable: each thread and task sees
    its own), e.g. which kernels a pass whose caller reads only the final outputs may use."""

    def __init__(self, name: str, default: bool):
        self._variable = contextvars.ContextVar(name, default=default)

    def get(self) -> bool:
        return self._variable.get()

    @contextlib.contextmanager
    def set_to(self, value: bool):
        token = self._variable.set(value)
        try:
            yield
        finally:
            self._variable.reset(token)


# glibc's mallopt parameter, and the size below which blocks come from (and go back to) the heap: 32 MiB, the ceiling
# glibc's own dynamic threshold rises to on 64-bit Linux (DEFAULT_MMAP_THRESHOLD_MAX)
M_MMAP_THRESHOLD = -3
HEAP_BLOCK_LIMIT = 32 << 20


def keep_freed_tensor_memory() -> bool:
    """Serve tensors up to HEAP_BLOCK_LIMIT from glibc's heap instead of fresh mmap pages (True if set).

    A framework whose CPU allocator hands every freed tensor back to malloc (paddle's) gets, for each tensor above
    glibc's mmap threshold (128 KiB, raised only as big blocks are freed), pages the kernel maps and zero-fills on
    first touch: a MiniLM training step's [32, 64, 1536] GELU forward and backward took 113 ms that way against 23 ms
    from the heap (an element-wise op over 3.1M floats 12 ms against 5). Left alone when the user set
    MALLOC_MMAP_THRESHOLD_ (or any other allocator choice through MALLOC_ variables or LD_PRELOAD), and off glibc."""
    if not sys.platform.startswith("linux") or "LD_PRELOAD" in os.environ or any(
            name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
