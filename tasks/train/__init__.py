"""Fine-tuning on any backend: a framework-free driver (`loop.py`) over one small step module per framework.

`torch.py`, `paddle.py` and `tensorflow.py` each define the same `Runner` (model, AdamW, clipping,
optimizer state by canonical name) and the same op set the framework-free losses call
(`losses.py`, `tasks/distill.py`). `runner_class(backend)` imports only the chosen framework.
"""
from __future__ import annotations

import importlib

STEP_MODULES = {"torch": "torch", "paddle": "paddle", "tf": "tensorflow"}
# the final outputs tasks decode (a head may have more, e.g. TinyBERT's fit_hidden_states)
PREDICTION_OUTPUTS = ("logits", "start_logits", "end_logits")


def step_module(backend: str):
    """tasks.train.<framework>: the Runner and op set of `backend` (imports that framework only)."""
    if backend not in STEP_MODULES:
        raise KeyError(f"unknown backend {backend!r}; known: {', '.join(STEP_MODULES)}")
    return importlib.import_module(f"tasks.train.{STEP_MODULES[backend]}")


def runner_class(backend: str):
    return step_module(backend).Runner


def prediction_outputs(spec, head: str) -> tuple[str, ...]:
    """The final outputs of `head` that a task decodes."""
    return tuple(name for name in spec.final_outputs[head] if name in PREDICTION_OUTPUTS)


def model_inputs(spec, config, head: str) -> tuple[str, ...]:
    """The names of the inputs the family declares for `config` and `head` (FamilySpec.model_inputs): what
    the task layer builds, the driver batches and the Runner feeds to forward()."""
    return spec.input_names(config, head)
