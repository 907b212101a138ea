"""Adapter configs as the `adapters` library 1.x defines them: names, fields, defaults, config strings.

`parse_adapter_config("seq_bn[reduction_factor=8]")` gives a frozen dataclass with the library's field
names and defaults (`BnConfig` for the bottleneck methods, `LoRAConfig` for LoRA); `.to_dict()` is the
"config" dict of the library's adapter_config.json. The syntax is the library's: a config name, then
optionally `[key=value, ...]` with Python literal values. Options the ports do not compute (gating, PHM
layers, invertible adapters, DoRA, VeRA, ...) are refused by name when set to anything but their default.
"""
from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from .._fw import ACTIVATIONS
from ..errors import ConfigError

DEFAULT_NAME = "adapter"  # the adapter's name in parameter names (`...adapters.<name>.`, `...loras.<name>.`)


class AdapterConfig:
    """Base of the adapter method configs (frozen dataclasses with the library's field names)."""

    def to_dict(self) -> dict:
        """The library's adapter_config.json "config" dict (lists where the library has lists)."""
        return {name: (list(value) if isinstance(value, tuple) else
                       dict(value) if isinstance(value, Mapping) else value)
                for name, value in ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class BnConfig(AdapterConfig):
    """A bottleneck adapter (the library's BnConfig): down-projection, non-linearity, up-projection, residual."""

    mh_adapter: bool
    output_adapter: bool
    reduction_factor: float | Mapping
    non_linearity: str
    original_ln_before: bool = False
    original_ln_after: bool = True
    ln_before: bool = False
    ln_after: bool = False
    init_weights: str = "bert"
    init_weights_seed: int | None = None
    is_parallel: bool = False
    scaling: float | str = 1.0
    use_gating: bool = False
    residual_before_ln: bool | str = True
    adapter_residual_before_ln: bool = False
    inv_adapter: str | None = None
    inv_adapter_reduction_factor: float | None = None
    cross_adapter: bool = False
    leave_out: tuple = ()
    dropout: float = 0.0
    phm_layer: bool = False
    phm_dim: int = 4
    factorized_phm_W: bool | None = True
    shared_W_phm: bool | None = False
    shared_phm_rule: bool | None = True
    factorized_phm_rule: bool | None = False
    phm_c_init: str | None = "normal"
    phm_init_range: float | None = 0.0001
    learn_phm: bool | None = True
    hypercomplex_nonlinearity: str | None = "glorot-uniform"
    phm_rank: int | None = 1
    phm_bias: bool | None = True
    stochastic_depth: float | None = 0.0

    architecture = None  # the library's BnConfig has no "architecture" key in its dict

    def reduction_for(self, layer: int) -> float:
        """The reduction factor of layer `layer` (a mapping gives per-layer values and a "default")."""
        factor = self.reduction_factor
        if isinstance(factor, Mapping):
            if str(layer) in factor:
                return factor[str(layer)]
            if "default" in factor:
                return factor["default"]
            raise ConfigError(f"adapter config: reduction_factor {dict(factor)} has no value for layer {layer} "
                              "and no 'default'")
        return factor


@dataclass(frozen=True)
class LoRAConfig(AdapterConfig):
    """Low-rank adaptation (the library's LoRAConfig): W x + (alpha / r) * B A dropout(x)."""

    architecture: str = "lora"
    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: tuple = ()
    r: int = 8
    alpha: int = 8
    dropout: float = 0.0
    attn_matrices: tuple = ("q", "v")
    composition_mode: str = "add"
    init_weights: str = "lora"
    init_weights_seed: int | None = None
    use_gating: bool = False
    use_dora: bool = False
    vera_d: float | None = None
    vera_b: float | None = None
    dtype: str | None = None

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


# the library's named configs (configuration/adapter_config.py, ADAPTER_CONFIG_MAP) that the ports compute
_SEQ_BN = dict(mh_adapter=False, output_adapter=True, reduction_factor=16, non_linearity="relu",
               original_ln_before=True, original_ln_after=True, residual_before_ln=True)
_DOUBLE_SEQ_BN = dict(mh_adapter=True, output_adapter=True, reduction_factor=16, non_linearity="swish",
                      original_ln_before=False, original_ln_after=True, residual_before_ln=True)
_PAR_BN = dict(mh_adapter=False, output_adapter=True, reduction_factor=2, non_linearity="relu",
               original_ln_before=False, original_ln_after=True, init_weights="mam_adapter", is_parallel=True,
               scaling=4.0)
NAMED_CONFIGS = {
    "seq_bn": (BnConfig, _SEQ_BN),
    "double_seq_bn": (BnConfig, _DOUBLE_SEQ_BN),
    "par_bn": (BnConfig, _PAR_BN),
    "scaled_par_bn": (BnConfig, {**_PAR_BN, "scaling": "learned"}),
    "lora": (LoRAConfig, {}),
    # the library's older names of the same configs
    "pfeiffer": (BnConfig, _SEQ_BN),
    "houlsby": (BnConfig, _DOUBLE_SEQ_BN),
    "parallel": (BnConfig, _PAR_BN),
    "scaled_parallel": (BnConfig, {**_PAR_BN, "scaling": "learned"}),
}
METHODS = ("seq_bn", "double_seq_bn", "par_bn", "lora")  # the methods every family and framework is tested with

# options the ports compute with their default value only: key -> (the only accepted value, why)
_BN_FIXED = {
    "ln_before": (False, "a new layer norm before the bottleneck"),
    "ln_after": (False, "a new layer norm after the bottleneck"),
    "use_gating": (False, "gating"),
    "phm_layer": (False, "PHM (Compacter) layers"),
    "inv_adapter": (None, "invertible adapters"),
    "stochastic_depth": (0.0, "stochastic depth"),
}
_LORA_FIXED = {
    "composition_mode": ("add", "(IA)^3 scaling"),
    "use_gating": (False, "gating"),
    "use_dora": (False, "DoRA"),
    "vera_d": (None, "VeRA"),
    "vera_b": (None, "VeRA"),
    "dtype": (None, "a dtype of its own for the LoRA matrices"),
}
BN_INITS = ("bert", "mam_adapter", "houlsby")
LORA_INITS = ("lora", "bert")
LORA_MATRICES = ("q", "k", "v")


def parse_adapter_config(text: str) -> AdapterConfig:
    """A config string as the `adapters` library reads it ("seq_bn", "lora[r=4,alpha=16]") -> its config.

    Raises ConfigError (a BadInput) naming the unknown config name, key or bad value."""
    if isinstance(text, AdapterConfig):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"adapter config {text!r}: expected a config string such as 'seq_bn' or 'lora[r=4]'")
    where = f"adapter config {text!r}"
    name, overrides = _split(text.strip(), where)
    if name not in NAMED_CONFIGS:
        raise ConfigError(f"{where}: unknown adapter {name!r} (known: {', '.join(NAMED_CONFIGS)})")
    config_class, defaults = NAMED_CONFIGS[name]
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for key in overrides:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} for {name} (keys: {', '.join(fields)})")
    values = {**defaults, **overrides}
    for key in ("leave_out", "attn_matrices"):
        if key in values and isinstance(values[key], list):
            values[key] = tuple(values[key])
    config = config_class(**values)
    _check(config, where)
    return config


def config_string_from_dict(data: dict, where: str) -> str:
    """The config string of a library adapter_config.json "config" dict (what `model.save_adapter` wrote): the
    method among METHODS needing the fewest overrides, with them, e.g. "seq_bn[reduction_factor=4]". Raises
    ConfigError naming an architecture the ports do not compute (prefix tuning, unions, ...) or an unknown key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected the adapter's config dict, got {type(data).__name__}")
    architecture = data.get("architecture")
    config_class = {None: BnConfig, "lora": LoRAConfig}.get(architecture)
    if config_class is None:
        raise ConfigError(f"{where}: architecture {architecture!r} is not computed here (bottleneck adapters and "
                          "lora are)")
    fields = {f.name for f in dataclasses.fields(config_class)}
    values = {key: value for key, value in data.items() if key != "architecture"}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for a {config_class.__name__} "
                          f"(keys: {', '.join(sorted(fields))})")
    candidates = []
    for method in METHODS:
        method_class, defaults = NAMED_CONFIGS[method]
        if method_class is not config_class:
            continue
        base = parse_adapter_config(method).to_dict()
        overrides = {key: value for key, value in values.items() if base.get(key) != value}
        candidates.append((len(overrides), method, overrides))
    _, method, overrides = min(candidates, key=lambda candidate: candidate[0])
    text = method + (f"[{', '.join(f'{key}={value!r}' for key, value in overrides.items())}]" if overrides else "")
    parse_adapter_config(text)  # a value the ports do not compute: ConfigError naming the key
    return text


def _split(text: str, where: str) -> tuple[str, dict]:
    """"name[k=v, ...]" -> (name, {k: v}); values are Python literals."""
    if "|" in text:
        raise ConfigError(f"{where}: combined configs ('|') are not supported; give one adapter method")
    if "[" not in text:
        return text, {}
    name, _, rest = text.partition("[")
    if not rest.endswith("]"):
        raise ConfigError(f"{where}: expected name[key=value, ...] with a closing ']'")
    try:
        call = ast.parse(f"f({rest[:-1]})", mode="eval").body
    except SyntaxError:
        raise ConfigError(f"{where}: cannot read {rest[:-1]!r} as key=value pairs") from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise ConfigError(f"{where}: overrides must be key=value pairs")
    overrides = {}
    for keyword in call.keywords:
        try:
            overrides[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise ConfigError(f"{where}: {keyword.arg}= must be a literal value (number, string, list, "
                              "True/False/None)") from None
    return name.strip(), overrides


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(config: AdapterConfig, where: str) -> None:
    """Refuse values the library refuses or the ports do not compute, naming the key."""
    def fail(key, message):
        raise ConfigError(f"{where}: {key}={getattr(config, key)!r} {message}")

    fixed = _BN_FIXED if isinstance(config, BnConfig) else _LORA_FIXED
    for key, (value, what) in fixed.items():
        if getattr(config, key) != value:
            fail(key, f"is not supported ({what}); only {value!r}")
    bools = [f.name for f in dataclasses.fields(config) if f.type in ("bool",)]
    for key in bools:
        if not isinstance(getattr(config, key), bool):
            fail(key, "must be True or False")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in config.leave_out):
        fail("leave_out", "must be a list of layer indices")
    if not _is_number(config.dropout) or not 0.0 <= config.dropout < 1.0:
        fail("dropout", "must be a probability in [0, 1)")
    if isinstance(config, BnConfig):
        factors = config.reduction_factor.values() if isinstance(config.reduction_factor, Mapping) \
            else [config.reduction_factor]
        if not all(_is_number(f) and f > 0 for f in factors):
            fail("reduction_factor", "must be a positive number or a mapping {layer: factor, 'default': factor}")
        if not isinstance(config.non_linearity, str) or config.non_linearity.lower() not in ACTIVATIONS:
            fail("non_linearity", f"must be one of {', '.join(ACTIVATIONS)}")
        if config.init_weights not in BN_INITS:
            fail("init_weights", f"must be one of {', '.join(BN_INITS)}")
        if not (isinstance(config.scaling, float) or config.scaling in ("learned", "channel")):
            fail("scaling", "must be a float (e.g. 2.0), 'learned' or 'channel' (as the adapters library)")
        if config.residual_before_ln not in (True, False, "post_add"):
            fail("residual_before_ln", "must be True, False or 'post_add'")
        if config.residual_before_ln == "post_add" and not config.original_ln_before and not config.is_parallel:
            fail("residual_before_ln", "needs original_ln_before=True (the sum it names is made there)")
        if not (config.mh_adapter or config.output_adapter):
            fail("output_adapter", "and mh_adapter are both False: the adapter would have no module")
    else:
        if not isinstance(config.r, int) or isinstance(config.r, bool) or config.r < 1:
            fail("r", "must be a positive integer")
        if not _is_number(config.alpha):
            fail("alpha", "must be a number")
        if config.init_weights not in LORA_INITS:
            fail("init_weights", f"must be one of {', '.join(LORA_INITS)}")
        if not set(config.attn_matrices) <= set(LORA_MATRICES):
            fail("attn_matrices", f"must be a list among {', '.join(LORA_MATRICES)}")
        if not (config.intermediate_lora or config.output_lora or (config.selfattn_lora and config.attn_matrices)):
            fail("selfattn_lora", "with no attn_matrices, intermediate_lora or output_lora: no weight to adapt")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"adapter name {name!r}: must be an identifier (letters, digits, _)")
    return name


__all__ = ["AdapterConfig", "BnConfig", "LoRAConfig", "DEFAULT_NAME", "METHODS", "NAMED_CONFIGS",
           "parse_adapter_config", "check_name"]
