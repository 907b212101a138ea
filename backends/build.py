"""Build a port and move weights in and out of it by canonical name, through the family's rules."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from . import family as get_family, framework, modeling
from .errors import WeightsError
from .weights import check_keys


def build_model(family_name: str, fw: str, config, head: str, params: Mapping[str, np.ndarray] | None = None,
                dtype: str = "float32", seed: int = 0, source: str = "weights"):
    """A `head` model of `family_name` in framework `fw`, in eval mode, holding `params`.

    Without `params` the family's own numpy init is used, so every framework starts identical.
    """
    spec = get_family(family_name)
    if head not in spec.heads:
        raise WeightsError(f"family {family_name} has no head {head!r}; heads: {', '.join(spec.heads)}")
    adapter = framework(fw)
    adapter.set_default_dtype(dtype)
    model = modeling(family_name, fw).HEADS[head](config)
    if params is None:
        params, source = spec.init_params(config, head, np.random.default_rng(seed)), "init"
    load_params(model, params, family_name, fw, source=source)
    model.eval()
    return model


def load_params(model, params: Mapping[str, np.ndarray], family_name: str, fw: str, source: str = "weights") -> None:
    """Assign canonical-layout arrays to a port; fail naming any missing, unexpected or mis-shaped key.

    A port parameter listed under several canonical names (Keras' one LSTM bias for torch's bias_ih and
    bias_hh) is assigned the sum of their target-layout arrays.
    """
    adapter = framework(fw)
    rules = get_family(family_name).port_rules[fw]
    slots = adapter.named_parameters(model)
    check_keys(slots, params, source)
    values = {}  # id(slot) -> (slot, array)
    for name, slot in slots.items():
        _, array = rules.to_target(name, np.asarray(params[name]))
        if tuple(array.shape) != adapter.shape(slot):
            canonical = rules.to_canonical(name, np.empty(adapter.shape(slot), dtype=np.int8)).shape
            raise WeightsError(f"{source}: {name} has shape {list(np.shape(params[name]))}, "
                               f"the model needs {list(canonical)}")
        if id(slot) in values:  # summed in float64: checkpoints may store a narrower dtype than the model's
            array = np.add(values[id(slot)][1], array, dtype=np.float64)
        values[id(slot)] = (slot, array)
    for slot, array in values.values():
        adapter.assign(slot, array)


def export_params(model, family_name: str, fw: str) -> dict:
    """The port's parameters as canonical-layout numpy arrays.

    A parameter listed under several canonical names goes whole to the first and as zeros to the others,
    so that loading the export gives it back exactly (its gradient, by contrast, is every name's gradient).
    """
    adapter = framework(fw)
    rules = get_family(family_name).port_rules[fw]
    exported, seen = {}, set()
    for name, param in adapter.named_parameters(model).items():
        array = adapter.to_numpy(param)
        exported[name] = rules.to_canonical(name, np.zeros_like(array) if id(param) in seen else array)
        seen.add(id(param))
    return exported


def canonical_grads(grads: Mapping, family_name: str, fw: str) -> dict:
    """Gradients by parameter name, brought from the port's layout to the canonical one."""
    adapter = framework(fw)
    rules = get_family(family_name).port_rules[fw]
    return {name: rules.to_canonical(name, adapter.to_numpy(g)) for name, g in grads.items()}
