"""What every model family declares, framework-free: config class, presets, heads, weights, inputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .weights import RuleSet


@dataclass(frozen=True)
class Preset:
    """A named model shape: the family, its config and the head the preset's checkpoints use."""

    name: str
    family: str
    config: object
    head: str
    description: str = ""


@dataclass(frozen=True)
class FamilySpec:
    """Everything the harness, converters and tasks need to know about a family without a framework."""

    name: str
    config_class: type
    presets: Mapping[str, Preset]
    heads: tuple[str, ...]
    # canonical parameter name -> shape, for a config and head
    param_shapes: Callable[[object, str], dict]
    # numpy initialisation (the family's published init), identical for every framework
    init_params: Callable[[object, str, np.random.Generator], dict]
    # framework -> RuleSet from canonical names/layouts to that port's names/layouts
    port_rules: Mapping[str, RuleSet]
    # seeded numpy inputs for a config, head, batch and sequence length
    make_inputs: Callable[[object, str, int, int, np.random.Generator], dict]
    # head -> names of the final outputs (the ones the parity loss is built from)
    final_outputs: Mapping[str, tuple[str, ...]]
    # readable names of the hidden states a head exposes, in order (for reports)
    hidden_state_names: Callable[[object, str], list]
    # a tiny config with the same switches as the given one (tests and quick parity runs)
    shrink: Callable[[object], object]
    # heads whose inputs carry a choices axis: [batch, choices, seq]
    choice_heads: tuple[str, ...] = field(default=())
    # canonical name -> shape of the parameters a checkpoint of a head may hold or lack (a pooler the head
    # does not use, a part only another ecosystem's class builds); param_shapes lists the port's own
    optional_shapes: Callable[[object, str], dict] = field(default=lambda config, head: {})
