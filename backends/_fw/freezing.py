"""Which parameters a Runner trains: all of them, or a named subset (adapter training freezes the base model).

Every step module (backends/_fw/<key>/train.py) freezes the same way: a frozen parameter computes no
gradient (torch `requires_grad`, paddle `stop_gradient`, TF left unwatched by the tape), gets no optimizer
state and is never touched by an update (weight decay included), so it stays bit-identical.
"""
from __future__ import annotations


def trainable_names(names, trainable=None) -> frozenset:
    """The parameter names to train among `names` (a model's canonical names): all when `trainable` is None.

    A name in `trainable` that the model lacks is an error (a typo would otherwise freeze what it meant to train),
    and so is an empty set (nothing would train)."""
    names = list(names)
    if trainable is None:
        return frozenset(names)
    chosen = frozenset(trainable)
    unknown = sorted(chosen - set(names))
    if unknown:
        listed = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        raise ValueError(f"trainable parameters the model does not have: {listed}")
    if not chosen:
        raise ValueError("no trainable parameters: the set of trainable names is empty")
    return chosen
