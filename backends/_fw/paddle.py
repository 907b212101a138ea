"""PaddlePaddle adapter (see backends/_fw/__init__.py for the surface)."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate=True),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": paddle.tanh,
}


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


def to_numpy(t) -> np.ndarray:
    return t.detach().numpy()


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


def activation(name: str):
    return _ACTIVATIONS[name]
