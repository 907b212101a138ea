"""Third-party oracles: the same weights and inputs through transformers' and PaddleNLP's classes.

An oracle runs in its own worker process like a backend (job "backend" is the oracle's name) and
yields the outputs it exposes under our names; there is no gradient, and it runs in float32
(transformers' Funnel computes attention scores in float32 even in float64, so float64 proves
nothing there).
"""
from __future__ import annotations

import numpy as np

from backends import FAMILIES, family

# family -> head -> transformers class name (the families' head registries, backends/<family>/heads.py)
TRANSFORMERS_CLASSES = {name: classes for name in FAMILIES
                        if (classes := {head: spec.transformers for head, spec in family(name).head_registry.items()
                                        if spec.transformers})}
ORACLES = {"transformers": "transformers (PyTorch classes)"}
# our output names -> transformers' output attribute names
OUTPUT_NAMES = {"last_hidden_state": "last_hidden_state", "logits": "logits", "start_logits": "start_logits",
                "end_logits": "end_logits", "hidden_states": "hidden_states", "attentions": "attentions"}


def run_transformers(family_name: str, config, head: str, params, inputs: dict, dtype: str) -> dict:
    """Outputs of transformers' PyTorch class for `head`, loaded with our canonical weights (strict)."""
    import torch
    import transformers

    from .worker import flatten_outputs

    class_name = TRANSFORMERS_CLASSES.get(family_name, {}).get(head)
    if class_name is None:
        raise KeyError(f"transformers has no class for {family_name} head {head}")
    hf_config = transformers.AutoConfig.for_model(**config.to_dict())
    model = getattr(transformers, class_name)(hf_config).eval().to(getattr(torch, dtype))
    state = {name: torch.from_numpy(np.asarray(params[name], dtype=dtype)) for name in params}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a tied weight (the MLM decoder is the word embedding) is one of ours but two of transformers' keys
    current = model.state_dict()
    loaded = {current[name].data_ptr() for name in state if name in current}
    untied = [name for name in missing if current[name].data_ptr() not in loaded]
    if untied or unexpected:
        raise KeyError(f"transformers {class_name}: missing {untied}, unexpected {unexpected}")
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}, output_hidden_states=True,
                    output_attentions=True)
    found = {ours: getattr(out, theirs) for ours, theirs in OUTPUT_NAMES.items() if getattr(out, theirs, None) is not None}
    return {name: t.numpy() for name, t in flatten_outputs(found).items()}


RUNNERS = {"transformers": run_transformers}
