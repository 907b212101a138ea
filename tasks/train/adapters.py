"""Adapter training, framework-free: which parameters train, the adapter a run adds or loads, the summary line.

`--train-adapter --adapter-config seq_bn` freezes the base model and trains the adapter (its parameters,
`backends.adapters.is_adapter_param`) and the task head (the parameters outside the base model's prefix,
`bert.` for BERT: `classifier.*`, `qa_outputs.*`), as the `adapters` library's `train_adapter` does with a
transformers task class: its pooler stays frozen, its classifier trains. `--load-adapter DIR` takes an
adapter-only folder (backends/checkpoints/adapters.py) instead of a fresh adapter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends import family as get_family
from backends.errors import BadInput

ADAPTER_SEED_OFFSET = 1  # the fresh adapter's numpy stream: seed + 1, apart from the head's (seed)


@dataclass(frozen=True)
class AdapterSetup:
    """An adapter on a run's model: its config string (the `adapters` library's syntax) and its name."""

    config: str
    name: str = "adapter"

    def parsed(self):
        from backends.adapters import parse_adapter_config

        return parse_adapter_config(self.config)


def base_prefix(family_name: str, config) -> str:
    """The prefix of the base model's parameters in a task head's names: the family's (`bert.`), or the base
    family's for a family that rewires another's layers under its names (the DeFormer's `base_family`)."""
    return (getattr(config, "base_family", None) or family_name) + "."


def is_adapter_name(name: str) -> bool:
    from backends.adapters import is_adapter_param

    return is_adapter_param(name)


def head_names(names, family_name: str, config) -> list[str]:
    """The task head's own parameters among `names` (a base-model head has none): not the adapter's, and outside
    the base model's prefix (the `adapters` library's PredictionHeadLoader takes the same set)."""
    prefix = base_prefix(family_name, config)
    prefixed = any(name.startswith(prefix) for name in names)
    return [name for name in names if prefixed and not name.startswith(prefix) and not is_adapter_name(name)]


def trainable_names(names, family_name: str, config) -> frozenset:
    """What adapter training trains: the adapter and the task head; the base model is frozen."""
    names = list(names)
    return frozenset([name for name in names if is_adapter_name(name)] + head_names(names, family_name, config))


def with_adapter(config, setup: AdapterSetup | None):
    """The model config with the adapter field set (None: removed): a port builds the adapter's modules from it."""
    if not hasattr(config, "adapter"):
        raise BadInput(f"{type(config).__name__}: this family takes no adapters")
    return config.replace(adapter=None if setup is None else setup.config)


def fresh_adapter(family_name: str, config, head: str, setup: AdapterSetup, seed: int) -> dict:
    """The adapter's initial parameters (the library's init, drawn in numpy: the same in every backend)."""
    from backends.adapters import adapter_init_params

    return adapter_init_params(family_name, config, setup.parsed(), np.random.default_rng(seed + ADAPTER_SEED_OFFSET),
                               setup.name, head)


def describe_trainable(params: dict, trainable) -> str:
    """"trainable parameters: 896,066 of 110,378,306 (0.812%)" (elements, not tensors)."""
    total = sum(int(np.prod(np.shape(array))) for array in params.values())
    trained = sum(int(np.prod(np.shape(params[name]))) for name in trainable)
    return f"trainable parameters: {trained:,} of {total:,} ({100 * trained / max(total, 1):.3g}%)"
