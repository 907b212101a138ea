"""Fine-tuning on any backend: a framework-free driver (`loop.py`) over one small step module per framework.

Each framework's `backends/_fw/<key>/train.py` defines the same `Runner` (model, AdamW, clipping,
optimizer state by canonical name) and the same op set the framework-free losses call
(`losses.py`, `tasks/distill.py`): `backends._fw.contract` writes both down. `runner_class(backend)`
imports only the chosen framework.
"""
from __future__ import annotations

import importlib

from backends import FRAMEWORKS

# the final outputs tasks decode (a head may have more, e.g. TinyBERT's fit_hidden_states)
PREDICTION_OUTPUTS = ("logits", "start_logits", "end_logits")


def step_module(backend: str):
    """backends/_fw/<backend>/train.py: the Runner and op set of `backend` (imports that framework only)."""
    if backend not in FRAMEWORKS:
        raise KeyError(f"unknown backend {backend!r}; known: {', '.join(FRAMEWORKS)}")
    return importlib.import_module(f"backends._fw.{backend}.train")


def runner_class(backend: str):
    return step_module(backend).Runner


def prediction_outputs(spec, head: str) -> tuple[str, ...]:
    """The final outputs of `head` that a task decodes."""
    return tuple(name for name in spec.final_outputs[head] if name in PREDICTION_OUTPUTS)


def model_inputs(spec, config, head: str) -> tuple[str, ...]:
    """The names of the inputs the family declares for `config` and `head` (FamilySpec.model_inputs): what
    the task layer builds, the driver batches and the Runner feeds to forward()."""
    return spec.input_names(config, head)
