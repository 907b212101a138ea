"""Adapters (bottleneck adapters and LoRA) as the `adapters` library 1.x defines them, for every framework.

Framework-free here: config strings and configs (config.py), where adapters plug in, their parameter
names, shapes and numpy init (params.py). The layers are in layers_torch.py, layers_paddle.py and
layers_tf.py (not `modeling_*.py`: this package is not a model family). A family's model gets adapters
when its config's `adapter` field holds a config string (None: the model without adapters, exactly).
"""
from .config import (DEFAULT_NAME, METHODS, NAMED_CONFIGS, AdapterConfig, BnConfig, LoRAConfig,
                     parse_adapter_config)
from .params import (LAYOUTS, adapter_init_params, adapter_param_shapes, bottleneck_size, init_from_shapes,
                     is_adapter_param, layer_sites, shapes_from_base)


def config_of(model_config):
    """The AdapterConfig a model config asks for (its `adapter` field), or None."""
    text = getattr(model_config, "adapter", None)
    return None if text is None else parse_adapter_config(text)


__all__ = ["DEFAULT_NAME", "METHODS", "NAMED_CONFIGS", "AdapterConfig", "BnConfig", "LoRAConfig", "LAYOUTS",
           "parse_adapter_config", "adapter_param_shapes", "adapter_init_params", "bottleneck_size",
           "init_from_shapes", "is_adapter_param", "layer_sites", "shapes_from_base", "config_of"]
