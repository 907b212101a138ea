"""Adapter layers in PaddlePaddle: the PyTorch layers (layers_torch.py), class by class, same parameter
names. paddle's Linear stores its weight [in, out] (the port rules transpose the bottleneck's kernels);
LoRA's A [r, in] and B [out, r] keep the library's (torch's) layout in every framework."""
from __future__ import annotations

import paddle
from paddle import nn

from .._fw.paddle import activation
from . import blocks
from .blocks import residual_block  # noqa: F401  (the ports call it at each sub-layer's end)


class Activation(nn.Layer):
    def __init__(self, name: str):
        super().__init__()
        self.fn = activation(name.lower())

    def forward(self, x):
        return self.fn(x)


class Adapter(nn.Layer):
    def __init__(self, config, hidden: int, down: int):
        super().__init__()
        self.config = config
        self.adapter_down = nn.Sequential(nn.Linear(hidden, down), Activation(config.non_linearity))
        self.adapter_up = nn.Linear(down, hidden)
        if config.scaling in ("learned", "channel"):
            self.scaling = self.create_parameter([1 if config.scaling == "learned" else hidden],
                                                 default_initializer=nn.initializer.Constant(1.0))
        else:
            self.scaling = float(config.scaling)
        self.dropout = nn.Dropout(config.dropout)

    def bottleneck(self, x):
        return self.dropout(self.adapter_up(self.adapter_down(x)) * self.scaling)


def make_bottleneck(config, hidden: int, down: int, name: str):
    return nn.LayerDict({name: Adapter(config, hidden, down)})


class LoRA(nn.Layer):
    def __init__(self, config, n_in: int, n_out: int):
        super().__init__()
        zeros = nn.initializer.Constant(0.0)
        self.lora_A = self.create_parameter([config.r, n_in], default_initializer=zeros)
        self.lora_B = self.create_parameter([n_out, config.r], default_initializer=zeros)
        self.scaling = config.scaling
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0.0 else None

    def delta_w(self):
        """(B A)^T, [in, out]: paddle's weight layout."""
        return paddle.matmul(self.lora_A, self.lora_B, transpose_x=True, transpose_y=True)

    def forward(self, x):
        if self.lora_dropout is not None:
            x = self.lora_dropout(x)
        x = paddle.matmul(x, self.lora_A, transpose_y=True)
        return paddle.matmul(x, self.lora_B, transpose_y=True) * self.scaling


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
            with paddle.no_grad():
                self.weight.set_value(self.weight + lora.delta_w() * lora.scaling)
            self.merged = True


def wrap_linear(linear: nn.Linear, config, name: str) -> LoRALinear:
    n_in, n_out = linear.weight.shape
    wrapped = LoRALinear(n_in, n_out, bias_attr=None if linear.bias is not None else False)
    wrapped.weight, wrapped.bias = linear.weight, linear.bias
    wrapped.merged = False
    wrapped.loras = nn.LayerDict({name: LoRA(config, n_in, n_out)})
    return wrapped


def add_adapters(layers, model_config, layout: str, hidden: int, first_index: int = 0) -> None:
    from . import config_of

    blocks.attach(layers, config_of(model_config), layout, hidden, make_bottleneck, wrap_linear, first_index)


def merge_lora(model) -> None:
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, LoRALinear):
            layer.merge()
