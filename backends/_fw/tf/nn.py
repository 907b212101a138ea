"""Minimal torch-like layers on tf.Module: parameters are named by attribute path, as in torch.

Keras layers name variables by creation scope and store Dense kernels as [in, out]; these layers keep
Keras' [in, out] kernel layout (the weight rules transpose it) but torch's names and methods
(`forward`, `train()`, `eval()`, `named_parameters()`), so the TF ports read like the reference.
"""
from __future__ import annotations

import tensorflow as tf

_default_dtype = tf.float32


def set_default_dtype(name: str) -> None:
    global _default_dtype
    _default_dtype = tf.as_dtype(name)


class Layer(tf.Module):
    """torch.nn.Module-like base: `__call__` runs `forward`; `training` toggles dropout."""

    def __init__(self):
        super().__init__()
        self.training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def children(self):
        for value in vars(self).values():
            if isinstance(value, Layer):
                yield value
            elif isinstance(value, (list, tuple)):
                yield from (v for v in value if isinstance(v, Layer))

    def modules(self):
        """This layer and every layer under it (torch's Module.modules())."""
        yield self
        for child in self.children():
            yield from child.modules()

    def train(self, mode: bool = True):
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def named_parameters(self, prefix: str = ""):
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            yield from _named(value, f"{prefix}{name}")

    def parameter(self, shape, name: str):
        """A trainable variable of the default dtype (zeros; real values are always loaded)."""
        return tf.Variable(tf.zeros(shape, dtype=_default_dtype), name=name)


def _named(value, path: str):
    if isinstance(value, tf.Variable):
        yield path, value
    elif isinstance(value, Layer):
        yield from value.named_parameters(prefix=path + ".")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _named(item, f"{path}.{index}")


class LayerList(Layer):
    """torch.nn.ModuleList: children named by index."""

    def __init__(self, layers):
        super().__init__()
        self.layers = list(layers)

    def named_parameters(self, prefix: str = ""):
        for index, layer in enumerate(self.layers):
            yield from layer.named_parameters(prefix=f"{prefix}{index}.")

    def children(self):
        return iter(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)


class Linear(Layer):
    """y = x @ weight + bias with weight stored [in, out] (Keras Dense layout; torch stores [out, in])."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = self.parameter([in_features, out_features], "weight")
        self.bias = self.parameter([out_features], "bias") if bias else None

    def forward(self, x):
        flat = tf.reshape(x, [-1, x.shape[-1]])
        y = tf.matmul(flat, self.weight)
        if self.bias is not None:
            y = y + self.bias
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.weight.shape[1]]], 0))


class LayerNorm(Layer):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = self.parameter([size], "weight")
        self.bias = self.parameter([size], "bias")

    def forward(self, x):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
        return centered / tf.sqrt(variance + self.eps) * self.weight + self.bias


class Embedding(Layer):
    def __init__(self, num_embeddings: int, dim: int, padding_idx: int | None = None):
        super().__init__()
        self.padding_idx = padding_idx
        self.weight = self.parameter([num_embeddings, dim], "weight")

    def forward(self, ids):
        vectors = tf.gather(self.weight, ids)
        if self.padding_idx is None:
            return vectors
        # torch and paddle give the padding row no gradient; a stop_gradient on those lookups does the same
        is_pad = tf.equal(ids, self.padding_idx)[..., None]
        return tf.where(is_pad, tf.stop_gradient(vectors), vectors)


class Dropout(Layer):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return tf.nn.dropout(x, rate=self.p) if self.training and self.p > 0 else x
