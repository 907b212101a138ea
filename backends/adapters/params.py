"""Where adapters plug into a family's layers, their parameter names and shapes, and their numpy init.

Names are the `adapters` library's state_dict names. On the BERT-like layers (bert, roberta, tinybert and
whatever keeps their names) the library's BertSelfOutput / BertOutput hold the bottleneck adapters and
its LoRA wraps the Linear layers:
    <layer>.attention.output.adapters.<name>.adapter_down.0.weight   (mh_adapter: after the attention output)
    <layer>.output.adapters.<name>.adapter_up.weight                 (output_adapter: after the FFN output)
    <layer>.attention.self.query.loras.<name>.lora_A                 (LoRA on query, key, value, the FFN)
The library has no Funnel; its layers get the same parts at the same places, held by the module whose
layer norm they share: `<layer>.attention.adapters.<name>.` (after post_proj), `<layer>.ffn.adapters.<name>.`
(after linear_2), and LoRA on `attention.q_head/k_head/v_head` and `ffn.linear_1/linear_2`.

Everything is derived from the family's own parameter names (the base model's layers are found by a
pattern), so a family that keeps BERT's names gets adapters with no table of its own.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .config import DEFAULT_NAME, AdapterConfig, BnConfig, LoRAConfig, check_name, parse_adapter_config

BOTTLENECK_LOCATIONS = ("mh_adapter", "output_adapter")  # the library's order within a layer
LORA_LOCATIONS = ("q", "k", "v", "intermediate", "output")  # attn_matrices, then the FFN's two Linears


@dataclass(frozen=True)
class Layout:
    """How a family's layers are named: `layer` finds each layer's prefix in the base model's parameter
    names; `bottleneck` maps a location to (module holding the adapters, its layer norm); `linears` maps
    a LoRA location to the Linear it wraps, relative to the layer."""

    layer: str
    bottleneck: dict
    linears: dict


LAYOUTS = {
    "bert": Layout(
        layer=r"(.*encoder\.layer\.\d+\.)attention\.output\.dense\.weight",
        bottleneck={"mh_adapter": ("attention.output", "attention.output.LayerNorm"),
                    "output_adapter": ("output", "output.LayerNorm")},
        linears={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "intermediate": "intermediate.dense", "output": "output.dense"}),
    "funnel": Layout(
        layer=r"(.*(?:encoder\.blocks\.\d+\.\d+|decoder\.layers\.\d+)\.)attention\.post_proj\.weight",
        bottleneck={"mh_adapter": ("attention", "attention.layer_norm"), "output_adapter": ("ffn", "ffn.layer_norm")},
        linears={"q": "attention.q_head", "k": "attention.k_head", "v": "attention.v_head",
                 "intermediate": "ffn.linear_1", "output": "ffn.linear_2"}),
}

# a parameter of an adapter (any name): what `is_adapter_param` tells apart from the base model's
ADAPTER_PARAM = re.compile(r"(?:^|\.)(?:adapters|loras)\.[A-Za-z_]\w*\.")


def is_adapter_param(name: str) -> bool:
    """True for a parameter of an adapter (`...adapters.<name>.…`, `...loras.<name>.lora_A`)."""
    return ADAPTER_PARAM.search(name) is not None


def bottleneck_size(config: BnConfig, hidden: int, layer: int) -> int:
    """The bottleneck width at layer `layer`: hidden // reduction factor (at least 1), as the library."""
    return max(1, int(hidden // config.reduction_for(layer)))


def layer_sites(config: AdapterConfig, layout: str, layer: int) -> list[tuple[str, str]]:
    """[(location, module path relative to the layer)] that get an adapter at layer index `layer`:
    bottleneck locations ("mh_adapter", "output_adapter") or LoRA ones ("q", ..., "output")."""
    if layer in config.leave_out:
        return []
    table = LAYOUTS[layout]
    if isinstance(config, BnConfig):
        return [(loc, table.bottleneck[loc][0]) for loc in BOTTLENECK_LOCATIONS if getattr(config, loc)]
    wanted = [m for m in LORA_LOCATIONS[:3] if config.selfattn_lora and m in config.attn_matrices]
    wanted += ["intermediate"] * config.intermediate_lora + ["output"] * config.output_lora
    return [(loc, table.linears[loc]) for loc in wanted]


def layout_of(base_shapes: dict) -> tuple[str, list[str]]:
    """(layout name, layer prefixes in order) of a family's base parameter names."""
    for name, layout in LAYOUTS.items():
        prefixes = [m.group(1) for key in base_shapes if (m := re.fullmatch(layout.layer, key))]
        if prefixes:
            return name, prefixes
    raise ConfigError("adapters: this model has no layers adapters plug into (BERT-like or Funnel layers)")


def shapes_from_base(base_shapes: dict, config: AdapterConfig, name: str = DEFAULT_NAME) -> dict:
    """Adapter parameter names and shapes for a model whose base parameters are `base_shapes`."""
    check_name(name)
    layout, prefixes = layout_of(base_shapes)
    shapes = {}
    for index, prefix in enumerate(prefixes):
        for location, path in layer_sites(config, layout, index):
            if isinstance(config, LoRAConfig):
                n_out, n_in = base_shapes[f"{prefix}{path}.weight"]
                shapes[f"{prefix}{path}.loras.{name}.lora_A"] = (config.r, n_in)
                shapes[f"{prefix}{path}.loras.{name}.lora_B"] = (n_out, config.r)
                continue
            hidden = base_shapes[f"{prefix}{LAYOUTS[layout].bottleneck[location][1]}.weight"][0]
            down = bottleneck_size(config, hidden, index)
            p = f"{prefix}{path}.adapters.{name}."
            shapes.update({p + "adapter_down.0.weight": (down, hidden), p + "adapter_down.0.bias": (down,),
                           p + "adapter_up.weight": (hidden, down), p + "adapter_up.bias": (hidden,)})
            if config.scaling in ("learned", "channel"):
                shapes[p + "scaling"] = (1,) if config.scaling == "learned" else (hidden,)
    return shapes


def _kaiming_uniform(rng, shape):
    """torch's kaiming_uniform_(a=sqrt(5)) (nn.Linear's default): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(shape[1])
    return rng.uniform(-bound, bound, shape)


def _truncated_normal(rng, shape, std, limit):
    """N(0, std) redrawn outside [-limit, limit] (torch's trunc_normal_)."""
    values = rng.normal(0.0, std, shape)
    outside = np.abs(values) > limit
    while outside.any():
        values[outside] = rng.normal(0.0, std, int(outside.sum()))
        outside = np.abs(values) > limit
    return values


def init_from_shapes(shapes: dict, config: AdapterConfig, rng: np.random.Generator) -> dict:
    """The library's init of each adapter parameter, drawn in numpy in the order of `shapes`.

    Bottlenecks: "bert" N(0, 0.02) weights and zero biases (near identity: the residual dominates);
    "mam_adapter" (par_bn) kaiming-uniform down-projection, zero up-projection (exactly the base model);
    "houlsby" N(0, 0.01) truncated at 2 std; a learned scaling starts at 1. LoRA: "lora" A kaiming-uniform,
    B = 0 (exactly the base model); "bert" both N(0, 0.02)."""
    params = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[-1]
        is_down = ".adapter_down." in key
        if leaf == "bias":
            value = np.zeros(shape)
        elif leaf == "scaling":
            value = np.ones(shape)
        elif isinstance(config, LoRAConfig):
            if config.init_weights == "bert":
                value = rng.normal(0.0, 0.02, shape)
            else:
                value = _kaiming_uniform(rng, shape) if leaf == "lora_A" else np.zeros(shape)
        elif config.init_weights == "bert":
            value = rng.normal(0.0, 0.02, shape)
        elif config.init_weights == "mam_adapter":
            value = _kaiming_uniform(rng, shape) if is_down else np.zeros(shape)
        else:  # houlsby
            value = _truncated_normal(rng, shape, 1e-2, 2e-2)
        params[key] = value
    return params


def _family_base_shapes(family: str, config, head: str) -> dict:
    from .. import family as get_family

    plain = config.replace(adapter=None) if getattr(config, "adapter", None) else config
    return get_family(family).param_shapes(plain, head)


def adapter_param_shapes(family: str, config, adapter_config, name: str = DEFAULT_NAME,
                         head: str = "seqcls") -> dict:
    """{canonical name: shape} of the adapter parameters of `family`'s `head` model built from `config`
    (names as the library's state_dict, e.g. `bert.encoder.layer.0.output.adapters.adapter.adapter_up.weight`;
    head "base" gives the base model's names, without the `bert.` prefix)."""
    return shapes_from_base(_family_base_shapes(family, config, head), parse_adapter_config(adapter_config), name)


def adapter_init_params(family: str, config, adapter_config, rng: np.random.Generator, name: str = DEFAULT_NAME,
                        head: str = "seqcls") -> dict:
    """{canonical name: numpy array}: the library's init of those parameters (see init_from_shapes)."""
    adapter_config = parse_adapter_config(adapter_config)
    return init_from_shapes(adapter_param_shapes(family, config, adapter_config, name, head), adapter_config, rng)
