"""Adapter training, framework-free: which parameters train, the adapter a run adds or loads, the summary line.

`--train-adapter --adapter-config seq_bn` freezes the base model and trains the adapter (its parameters,
`backends.adapters.is_adapter_param`) and the task head (the parameters outside the base model's prefix,
`bert.` for BERT: `classifier.*`, `qa_outputs.*`), as the `adapters` library's `train_adapter` does with a
transformers task class: its pooler stays frozen, its classifier trains. A fresh adapter is the family's init
of a config with the adapter (`spec.init_params`: the library's init, drawn in numpy after the base model's);
`--load-adapter DIR` takes an adapter-only folder (backends/checkpoints/adapters.py) instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.adapters import DEFAULT_NAME, is_adapter_param
from backends.checkpoints.adapters import head_names


@dataclass(frozen=True)
class AdapterSetup:
    """An adapter on a run's model: its config string (the `adapters` library's syntax) and its name."""

    config: str
    name: str = DEFAULT_NAME


def trainable_names(names, family_name: str, config) -> frozenset:
    """What adapter training trains: the adapter and the task head; the base model is frozen."""
    names = list(names)
    return frozenset([name for name in names if is_adapter_param(name)] + head_names(names, family_name, config))


def describe_trainable(params: dict, trainable) -> str:
    """"trainable parameters: 896,066 of 110,378,306 (0.812%)" (elements, not tensors)."""
    total = sum(int(np.prod(np.shape(array))) for array in params.values())
    trained = sum(int(np.prod(np.shape(params[name]))) for name in trainable)
    return f"trainable parameters: {trained:,} of {total:,} ({100 * trained / max(total, 1):.3g}%)"
