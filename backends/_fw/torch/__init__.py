"""PyTorch adapter (the surface: backends/_fw/contract.py, Adapter)."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from .. import ContextFlag

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def in_float64(fn):
    """fn evaluated in float64 and rounded back to the input's dtype."""
    return lambda x: fn(x) if x.dtype == torch.float64 else fn(x.to(torch.float64)).to(x.dtype)


# torch's float32 tanh and sigmoid are within about one ulp: the reference needs no float64 detour
tanh, sigmoid = torch.tanh, torch.sigmoid


def set_default_dtype(name: str) -> None:
    torch.set_default_dtype(getattr(torch, name))


def seed(n: int) -> None:
    torch.manual_seed(n)


def deterministic() -> None:
    # deterministic cuBLAS needs a fixed workspace, set before its first call (else torch raises on GPU)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def no_tf32() -> None:
    # TF32 is a CUDA matter: cuBLAS matrix products (allow_tf32, off by default since torch 1.12; the same switch
    # as set_float32_matmul_precision("highest")) and cuDNN convolutions and RNNs (cudnn.allow_tf32, on by default)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def on_device(device: str):
    # torch.device as a context makes factory functions (parameters, zeros) create on it; from_numpy follows it
    return torch.device("cuda" if device == "gpu" else "cpu")


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def from_numpy(a, dtype: str | None = None, device=None):
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=device or torch.get_default_device(), dtype=getattr(torch, dtype) if dtype else None)


def named_parameters(model) -> dict:
    return dict(model.named_parameters())


def shape(param) -> tuple:
    return tuple(param.shape)


def assign(param, array: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array, dtype=to_numpy(param).dtype)))


def value_and_grads(model, fn):
    """Run fn() -> (loss, outputs, watched) and backpropagate the loss."""
    model.zero_grad(set_to_none=True)
    loss, outputs, watched = fn()
    for tensor in watched.values():
        tensor.retain_grad()
    loss.backward()
    grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()}
    return loss, outputs, grads, {name: t.grad for name, t in watched.items()}


def dot(tensor, array: np.ndarray):
    """sum(tensor * array): a fixed scalar function of an output (the parity loss)."""
    return (tensor * from_numpy(array, device=tensor.device)).sum()


def no_grad():
    return torch.no_grad()


def activation(name: str):
    return _ACTIVATIONS[name]


# Every port returns each layer's attention probabilities and pre-softmax scores (parity compares them, TinyBERT's
# attention loss reads them). A pass whose caller reads only the final outputs (Runner.predict, serving) needs neither:
# there the torch attention runs the fused scaled_dot_product_attention kernel, as transformers' PyTorch classes do.
_ATTENTION_WEIGHTS_WANTED = ContextFlag("attention_weights_wanted", default=True)


def without_attention_weights():
    """A context in which attention layers may skip materialising probabilities and scores (they return None)."""
    return _ATTENTION_WEIGHTS_WANTED.set_to(False)


def attention_weights_wanted() -> bool:
    return _ATTENTION_WEIGHTS_WANTED.get()


def final_outputs_only():
    """Attention on torch's fused kernel, its probabilities not materialised (without_attention_weights)."""
    return without_attention_weights()
