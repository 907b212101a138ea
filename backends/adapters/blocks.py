"""What every framework's adapter layers share: plugging them into a model's layers, and the bottleneck's
residual and layer-norm placement (written with module calls, `+` and `*` only, so the same lines run on
torch, paddle and TF tensors).
"""
from __future__ import annotations

from .config import DEFAULT_NAME, LoRAConfig
from .params import bottleneck_size, layer_sites


def _module(root, path: str):
    for part in filter(None, path.split(".")):
        root = getattr(root, part)
    return root


def attach(layers, adapter_config, layout: str, hidden: int, make_bottleneck, wrap_linear, first_index: int = 0,
           name: str = DEFAULT_NAME) -> None:
    """Give each layer of `layers` (index `first_index` + position: the library's layer index, which
    leave_out and per-layer reduction factors name) the adapters `adapter_config` asks for at `layout`'s
    places (params.LAYOUTS): `make_bottleneck(config, hidden, down)` is set as `<module>.adapters` (a
    dict-like layer holding it under `name`), `wrap_linear(linear, config, name)` replaces a Linear."""
    if adapter_config is None:
        return
    for offset, layer in enumerate(layers):
        index = first_index + offset
        for _, path in layer_sites(adapter_config, layout, index):
            if isinstance(adapter_config, LoRAConfig):
                parent_path, _, attribute = path.rpartition(".")
                parent = _module(layer, parent_path)
                setattr(parent, attribute, wrap_linear(getattr(parent, attribute), adapter_config, name))
            else:
                down = bottleneck_size(adapter_config, hidden, index)
                _module(layer, path).adapters = make_bottleneck(adapter_config, hidden, down, name)


def residual_block(module, hidden_states, input_tensor, layer_norm):
    """A sub-layer's end: `layer_norm(hidden_states + input_tensor)`, with `module`'s bottleneck adapter
    (if it holds one, in `module.adapters`) placed as the library places it."""
    adapters = getattr(module, "adapters", None)
    if adapters is None:
        return layer_norm(hidden_states + input_tensor)
    (adapter,) = adapters.values()
    return bottleneck_forward(adapter, hidden_states, input_tensor, layer_norm)


def bottleneck_forward(adapter, hidden_states, input_tensor, layer_norm):
    """The library's pre_forward, forward and post_forward of one (Parallel)Adapter (methods/modeling.py).

    `hidden_states` is the sub-layer's output (after its dropout), `input_tensor` its residual input.
    Sequential (seq_bn, double_seq_bn): the bottleneck reads the sub-layer's output, or with
    original_ln_before (seq_bn) the layer-normed sum of output and residual; the bottleneck's own residual is
    taken before that layer norm (residual_before_ln=True: the output; "post_add": the sum; False: after the
    norm); then, with original_ln_after, the layer's layer norm over the result plus the residual input (the
    same norm, applied twice in seq_bn). Parallel (par_bn): the bottleneck reads the residual input, its
    scaled output is added to the sub-layer's output, then the layer norm of that plus the residual input."""
    config = adapter.config
    if config.is_parallel:
        output = adapter.bottleneck(input_tensor) + hidden_states
    else:
        residual = hidden_states
        x = hidden_states
        if config.original_ln_before:
            x = hidden_states + input_tensor
            if config.residual_before_ln == "post_add":
                residual = x
            x = layer_norm(x)
        if config.residual_before_ln is False:
            residual = x
        output = adapter.bottleneck(x) + residual
    if config.original_ln_after:
        output = layer_norm(output + input_tensor)
    return output
