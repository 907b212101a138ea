"""Adapter layers in TensorFlow (on `_fw.tf.nn` layers): the PyTorch layers (layers_torch.py), class by
class, same parameter names. nn.Linear stores its weight [in, out] (the port rules transpose the
bottleneck's kernels); LoRA's A [r, in] and B [out, r] keep the library's (torch's) layout."""
from __future__ import annotations

import tensorflow as tf

from .._fw.tf import activation, nn
from . import blocks
from .blocks import residual_block  # noqa: F401  (the ports call it at each sub-layer's end)


class Activation(nn.Layer):
    def __init__(self, name: str):
        super().__init__()
        self._fn = activation(name.lower())

    def forward(self, x):
        return self._fn(x)


class Sequential(nn.LayerList):
    """torch's nn.Sequential: children named by index, called in order."""

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class LayerDict(nn.Layer):
    """torch's nn.ModuleDict: children named by key (the adapter's name)."""

    def __init__(self, layers: dict):
        super().__init__()
        self._keys = list(layers)
        for key, layer in layers.items():
            setattr(self, key, layer)

    def values(self):
        return [getattr(self, key) for key in self._keys]


class Adapter(nn.Layer):
    def __init__(self, config, hidden: int, down: int):
        super().__init__()
        self._config = config
        self.adapter_down = Sequential([nn.Linear(hidden, down), Activation(config.non_linearity)])
        self.adapter_up = nn.Linear(down, hidden)
        if config.scaling in ("learned", "channel"):
            self.scaling = self.parameter([1 if config.scaling == "learned" else hidden], "scaling")
        else:
            self.scaling = float(config.scaling)
        self.dropout = nn.Dropout(config.dropout)

    @property
    def config(self):
        return self._config

    def bottleneck(self, x):
        return self.dropout(self.adapter_up(self.adapter_down(x)) * self.scaling)


def make_bottleneck(config, hidden: int, down: int, name: str):
    return LayerDict({name: Adapter(config, hidden, down)})


def _matmul_t(x, matrix):
    """x @ matrix^T over the last axis of an [..., in] tensor."""
    flat = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), matrix, transpose_b=True)
    return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], [matrix.shape[0]]], 0))


class LoRA(nn.Layer):
    def __init__(self, config, n_in: int, n_out: int):
        super().__init__()
        self.lora_A = self.parameter([config.r, n_in], "lora_A")
        self.lora_B = self.parameter([n_out, config.r], "lora_B")
        self.scaling = config.scaling
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0.0 else None

    def delta_w(self):
        """(B A)^T, [in, out]: the TF port's weight layout."""
        return tf.matmul(self.lora_A, self.lora_B, transpose_a=True, transpose_b=True)

    def forward(self, x):
        if self.lora_dropout is not None:
            x = self.lora_dropout(x)
        return _matmul_t(_matmul_t(x, self.lora_A), self.lora_B) * self.scaling


class LoRALinear(nn.Linear):
    def forward(self, x):
        output = super().forward(x)
        if self.merged:
            return output
        (lora,) = self.loras.values()
        return output + lora(x)

    def merge(self) -> None:
        if not self.merged:
            (lora,) = self.loras.values()
            self.weight.assign(self.weight + lora.delta_w() * lora.scaling)
            self.merged = True


def wrap_linear(linear: nn.Linear, config, name: str) -> LoRALinear:
    n_in, n_out = linear.weight.shape
    wrapped = LoRALinear.__new__(LoRALinear)
    nn.Layer.__init__(wrapped)
    wrapped.weight, wrapped.bias = linear.weight, linear.bias
    wrapped.merged = False
    wrapped.loras = LayerDict({name: LoRA(config, n_in, n_out)})
    return wrapped


def add_adapters(layers, model_config, layout: str, hidden: int, first_index: int = 0) -> None:
    from . import config_of

    blocks.attach(layers, config_of(model_config), layout, hidden, make_bottleneck, wrap_linear, first_index)


def merge_lora(model) -> None:
    for layer in model.modules():
        if isinstance(layer, LoRALinear):
            layer.merge()
