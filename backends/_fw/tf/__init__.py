"""TensorFlow adapter (the surface: backends/_fw/contract.py, Adapter).

The TF ports are built from the `nn` layers of this package (plain tf.Module objects) so that parameter names are
attribute paths, exactly as in torch and paddle.
"""
from __future__ import annotations

import contextlib

import math

import numpy as np
import tensorflow as tf

from . import nn


# tf.nn.gelu is off by up to 5e-9 (erf) and 9e-10 (tanh) in float64, float32-level accuracy; the same
# formulas written with tf.math.erf / tf.tanh are exact to rounding, like torch's and paddle's gelu.
def _gelu(x):
    return 0.5 * x * tf.math.erfc(-x * (1.0 / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def in_float64(fn):
    """fn evaluated in float64 and rounded back to the input's dtype."""
    return lambda x: fn(x) if x.dtype == tf.float64 else tf.cast(fn(tf.cast(x, tf.float64)), x.dtype)


# TF's float32 tanh and sigmoid (Eigen's fast approximations) are several ulp off where torch's are within
# about one (tanh: rms 5.6e-8 against 2.0e-8 relative): in float64 a float32 port is as accurate as torch
tanh, sigmoid = in_float64(tf.tanh), in_float64(tf.sigmoid)


_ACTIVATIONS = {
    "gelu": _gelu,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": tf.nn.relu,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "tanh": tanh,
}


def set_default_dtype(name: str) -> None:
    nn.set_default_dtype(name)


def seed(n: int) -> None:
    tf.random.set_seed(n)


def deterministic() -> None:
    tf.config.experimental.enable_op_determinism()


def no_tf32() -> None:
    # TF runs float32 matrix products and convolutions in TF32 on Ampere or later GPUs by default (TF >= 2.4)
    tf.config.experimental.enable_tensor_float_32_execution(False)


def on_device(device: str):
    # variables and ops are placed by tf.device scopes (unplaced, TF would pick a GPU by itself)
    return tf.device("/GPU:0" if device == "gpu" else "/CPU:0")


def to_numpy(t) -> np.ndarray:
    return tf.convert_to_tensor(t).numpy()


def from_numpy(a, dtype: str | None = None, device=None):
    return tf.convert_to_tensor(np.ascontiguousarray(a, dtype=dtype) if dtype else np.ascontiguousarray(a))


def named_parameters(model) -> dict:
    return dict(model.named_parameters())


def shape(param) -> tuple:
    return tuple(param.shape)


def assign(param, array: np.ndarray) -> None:
    param.assign(np.ascontiguousarray(array, dtype=param.dtype.as_numpy_dtype))


def value_and_grads(model, fn):
    """Run fn() -> (loss, outputs, watched) under a tape and differentiate the loss."""
    params = named_parameters(model)
    with tf.GradientTape() as tape:
        loss, outputs, watched = fn()
    sources = list(params.values()) + list(watched.values())
    grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = [tf.convert_to_tensor(g) for g in grads]  # embedding gathers give IndexedSlices
    return loss, outputs, dict(zip(params, grads[: len(params)])), dict(zip(watched, grads[len(params):]))


def dot(tensor, array: np.ndarray):
    """sum(tensor * array): a fixed scalar function of an output (the parity loss)."""
    return tf.reduce_sum(tensor * from_numpy(array))


def no_grad():
    return contextlib.nullcontext()


def final_outputs_only():
    """TensorFlow's ports have no fused inference kernel to switch to (its compiled step fuses by itself)."""
    return contextlib.nullcontext()


def activation(name: str):
    return _ACTIVATIONS[name]
