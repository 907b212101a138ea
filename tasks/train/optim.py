"""AdamW settings, the no-decay rule and the linear warmup/decay schedule, framework-free.

Every backend's step module applies torch's AdamW formula with these settings; the learning rate of
each step is computed here in Python and handed to the backend, so no framework's scheduler is used.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# canonical-name patterns of parameters that get no weight decay: transformers' Trainer excludes every
# name containing "bias" and every LayerNorm parameter (the LayerNorm biases match "bias" already)
NO_DECAY = (r"bias", r"(LayerNorm|layer_norm)\.weight$")


def decays(name: str) -> bool:
    """Whether the canonical parameter `name` gets weight decay."""
    return not any(re.search(pattern, name) for pattern in NO_DECAY)


@dataclass(frozen=True)
class AdamWSettings:
    """torch.optim.AdamW's hyperparameters; `no_decay` holds the canonical names exempt from decay."""

    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    no_decay: frozenset = field(default_factory=frozenset)

    @classmethod
    def for_params(cls, names, **settings) -> "AdamWSettings":
        return cls(no_decay=frozenset(name for name in names if not decays(name)), **settings)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """ceil(ratio * total), as transformers' TrainingArguments.get_warmup_steps."""
    return math.ceil(total_steps * warmup_ratio)


def linear_lr(step: int, base_lr: float, total_steps: int, warmup: int) -> float:
    """Learning rate of update `step` (0-based): transformers' get_linear_schedule_with_warmup."""
    if step < warmup:
        return base_lr * step / max(1, warmup)
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))
