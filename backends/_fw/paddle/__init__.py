"""PaddlePaddle adapter (the surface: backends/_fw/contract.py, Adapter)."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import paddle
import paddle.nn.functional as F

from backends import USER_THREAD_SETTINGS
from backends._fw import keep_freed_tensor_memory

from .nn import fused_layer_norm


def _gelu_tanh(x):
    """GELU's tanh approximation. paddle's float32 kernel is evaluated in float64: its float32 backward came out
    3.6x as far from the float64 truth as torch's (relative rms error 3.9e-7 against 1.1e-7, forward 1.5x), which
    put the float32 gradients of a Funnel (gelu_new) 2.1x as far from the truth as torch's on an AVX-512 CPU, over
    the parity harness's rule of 2; in float64 its pooled ratio is 1.35. Other dtypes run paddle's kernel."""
    if x.dtype == paddle.float32:
        return F.gelu(x.astype("float64"), approximate=True).astype(x.dtype)
    return F.gelu(x, approximate=True)


_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": paddle.tanh,
}


def _matrix_products_on_every_core() -> None:
    """`import paddle` sets OMP_NUM_THREADS=1 when it is unset, so Paddle's MKL matrix products run on one
    thread; raising OMP_NUM_THREADS made a MiniLM training step 2.9x slower on 2 cores (Paddle's OpenMP
    element-wise kernels), while more MKL threads alone made it 1.6x faster. MKL reads MKL_NUM_THREADS at
    its first call, which comes after this import. Left alone when the user set either variable."""
    if not USER_THREAD_SETTINGS:
        os.environ.setdefault("MKL_NUM_THREADS", str(len(os.sched_getaffinity(0))))


_matrix_products_on_every_core()
# paddle's CPU allocator frees every tensor to malloc: without this each step's activations page-fault afresh
keep_freed_tensor_memory()


def in_float64(fn):
    """fn evaluated in float64 and rounded back to the input's dtype."""
    return lambda x: fn(x) if x.dtype == paddle.float64 else fn(x.astype("float64")).astype(x.dtype)


# the BiLSTM's gates, as in the TF adapter: with paddle's fused float32 LSTM the port came out twice as far
# from the float64 truth as torch's; gates evaluated in float64 make it as accurate
tanh, sigmoid = in_float64(paddle.tanh), in_float64(F.sigmoid)


def set_default_dtype(name: str) -> None:
    paddle.set_default_dtype(name)


def seed(n: int) -> None:
    paddle.seed(n)


def deterministic() -> None:
    for flag, value in (("FLAGS_cudnn_deterministic", True), ("FLAGS_embedding_deterministic", 1)):
        try:
            paddle.set_flags({flag: value})
        except ValueError:  # CPU builds lack the GPU-only flags
            pass


def no_tf32() -> None:
    # paddle's switches are flags: FLAGS_allow_tf32_cublas (matrix products, on by default) and
    # FLAGS_allow_tf32_cudnn (convolutions); CPU builds lack them. NVIDIA_TF32_OVERRIDE=0, which cuBLAS and cuDNN
    # read when they start (so before the first GPU op), covers kernels the flags do not reach
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    for flag in ("FLAGS_allow_tf32_cublas", "FLAGS_allow_tf32_cudnn"):
        try:
            paddle.set_flags({flag: False})
        except ValueError:  # CPU builds lack the GPU-only flags
            pass


@contextlib.contextmanager
def on_device(device: str):
    # paddle places parameters and tensors by one global device
    previous = paddle.get_device()
    paddle.set_device("gpu" if device == "gpu" else "cpu")
    try:
        yield
    finally:
        paddle.set_device(previous)


def to_numpy(t) -> np.ndarray:
    t = t.detach()
    # paddle's .numpy() copies every tensor into new memory (at twice a memcpy's cost: the parity workers'
    # result fetch took 54 s / 244 s at funnel-xlarge on a busy machine, torch's 0.1 s); DLPack shares a CPU
    # tensor's memory instead, as torch's .numpy() does. numpy has no bfloat16 (.numpy() gives its bits as
    # uint16) and cannot hold GPU memory: those are copied.
    if t.place.is_cpu_place() and t.dtype != paddle.bfloat16:
        return np.from_dlpack(t)
    return t.numpy()


def from_numpy(a, dtype: str | None = None, device=None):
    a = np.ascontiguousarray(a, dtype=dtype) if dtype else np.ascontiguousarray(a)
    return paddle.to_tensor(a, place=device)


def named_parameters(model) -> dict:
    return dict(model.named_parameters())


def shape(param) -> tuple:
    return tuple(param.shape)


def assign(param, array: np.ndarray) -> None:
    param.set_value(np.ascontiguousarray(array, dtype=to_numpy(param).dtype))


def value_and_grads(model, fn):
    """Run fn() -> (loss, outputs, watched) and backpropagate the loss."""
    model.clear_gradients()
    loss, outputs, watched = fn()
    for tensor in watched.values():
        tensor.retain_grads()
    loss.backward()
    grads = {name: (p.grad if p.grad is not None else paddle.zeros_like(p)) for name, p in model.named_parameters()}
    return loss, outputs, grads, {name: t.grad for name, t in watched.items()}


def dot(tensor, array: np.ndarray):
    """sum(tensor * array): a fixed scalar function of an output (the parity loss)."""
    return paddle.sum(tensor * from_numpy(array))


def no_grad():
    return paddle.no_grad()


# paddle 3 makes a transpose or a reshape a strided view (this flag, on by default) and the next op copies it with a
# generic strided kernel: in a MiniLM prediction (batch 64 x 64, quiet AMD EPYC, 2 threads) the attention's
# transposed query and key cost 1.0 s of 4.5 inside matmul, the heads' merge 0.3 s inside reshape; with the flag off
# transposes run paddle's dense transpose kernel and the pass took 3.47 s against 4.99 (PaddleNLP's model: 3.25
# against 4.59; both with MKL_DEBUG_CPU_TYPE=5, see the README). Views then become copies, which changes nothing in
# a pass that writes into no tensor.
STRIDED_VIEWS = "FLAGS_use_stride_kernel"


@contextlib.contextmanager
def dense_kernels():
    """A context in which paddle's view ops (transpose, reshape, slices) run dense kernels; the flag is restored on
    leaving (it is process-wide). For passes that write into no view: the Runner's forward and backward, its
    teacher outputs and predictions (a view becomes a copy, so an in-place write would miss its base tensor)."""
    before = paddle.get_flags([STRIDED_VIEWS])[STRIDED_VIEWS]
    paddle.set_flags({STRIDED_VIEWS: False})
    try:
        yield
    finally:
        paddle.set_flags({STRIDED_VIEWS: before})


@contextlib.contextmanager
def final_outputs_only():
    """LayerNorm on paddle's fused kernel below float64 (backends/_fw/paddle/nn.py, fused_layer_norm), view ops on
    dense kernels (dense_kernels)."""
    with fused_layer_norm(), dense_kernels():
        yield


def activation(name: str):
    return _ACTIVATIONS[name]
