"""Adapter layers in PyTorch: the `adapters` library's Adapter / ParallelAdapter and LoRA, same parameter
names. The Paddle and TF layers (layers_paddle.py, layers_tf.py) mirror these, class by class."""
from __future__ import annotations

import torch
from torch import nn

from .._fw.torch import activation
from . import blocks
from .blocks import residual_block  # noqa: F401  (the ports call it at each sub-layer's end)


class Activation(nn.Module):
    """The bottleneck's non-linearity as a module (it sits in `adapter_down`, after the Linear)."""

    def __init__(self, name: str):
        super().__init__()
        self.fn = activation(name.lower())

    def forward(self, x):
        return self.fn(x)


class Adapter(nn.Module):
    """A bottleneck: adapter_down (Linear, non-linearity), adapter_up (Linear), times scaling, dropout.
    Where it sits and which residual it adds: blocks.bottleneck_forward."""

    def __init__(self, config, hidden: int, down: int):
        super().__init__()
        self.config = config
        self.adapter_down = nn.Sequential(nn.Linear(hidden, down), Activation(config.non_linearity))
        self.adapter_up = nn.Linear(down, hidden)
        if config.scaling in ("learned", "channel"):
            self.scaling = nn.Parameter(torch.ones(1 if config.scaling == "learned" else hidden))
        else:
            self.scaling = float(config.scaling)
        self.dropout = nn.Dropout(config.dropout)

    def bottleneck(self, x):
        return self.dropout(self.adapter_up(self.adapter_down(x)) * self.scaling)


def make_bottleneck(config, hidden: int, down: int, name: str):
    return nn.ModuleDict({name: Adapter(config, hidden, down)})


class LoRA(nn.Module):
    """The low-rank update of one Linear: (dropout(x) A^T B^T) * alpha / r."""

    def __init__(self, config, n_in: int, n_out: int):
        super().__init__()
        self.lora_A = nn.Parameter(torch.zeros(config.r, n_in))
        self.lora_B = nn.Parameter(torch.zeros(n_out, config.r))
        self.scaling = config.scaling
        # the library has no dropout layer at all when the rate is 0 (and so draws no mask)
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0.0 else None

    def delta_w(self):
        """B A, [out, in]: what merging adds to the weight (times scaling)."""
        return self.lora_B @ self.lora_A

    def forward(self, x):
        if self.lora_dropout is not None:
            x = self.lora_dropout(x)
        return x @ self.lora_A.t() @ self.lora_B.t() * self.scaling


class LoRALinear(nn.Linear):
    """A Linear (same weight and bias parameters) plus its LoRA update; `merge()` folds the update into
    the weight (inference), after which the output is the same from one matmul."""

    def forward(self, x):
        output = super().forward(x)
        if self.merged:
            return output
        (lora,) = self.loras.values()
        return output + lora(x)

    def merge(self) -> None:
        if not self.merged:
            (lora,) = self.loras.values()
            with torch.no_grad():
                self.weight += lora.delta_w() * lora.scaling
            self.merged = True


def wrap_linear(linear: nn.Linear, config, name: str) -> LoRALinear:
    wrapped = LoRALinear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    wrapped.weight, wrapped.bias = linear.weight, linear.bias
    wrapped.merged = False
    wrapped.loras = nn.ModuleDict({name: LoRA(config, linear.in_features, linear.out_features)})
    return wrapped


def add_adapters(layers, model_config, layout: str, hidden: int, first_index: int = 0) -> None:
    """Plug the adapter `model_config.adapter` asks for into `layers` (nothing when it is None)."""
    from . import config_of

    blocks.attach(layers, config_of(model_config), layout, hidden, make_bottleneck, wrap_linear, first_index)


def merge_lora(model) -> None:
    """Fold every LoRA update of `model` into its Linear weights (for inference; outputs unchanged)."""
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.merge()
