"""Task losses, written once over a backend's op set (`ops`: backends/_fw/<framework>/train.py).

Each loss is `loss(ops, outputs, batch)`: the model's outputs and the batch as framework tensors.
"""
from __future__ import annotations


def classification(ops, outputs, batch):
    """Cross-entropy of the logits (sequence classification, and multiple choice over [B, choices])."""
    return ops.cross_entropy(outputs["logits"], batch["labels"])


def regression(ops, outputs, batch):
    """Mean squared error of the single score (STS-B), as transformers with num_labels == 1."""
    return ops.mse(outputs["logits"], batch["labels"])


def span(ops, outputs, batch):
    """Mean of the start and end position cross-entropies, as transformers' question answering heads.

    transformers also clamps positions outside the sequence and ignores them; the SQuAD features
    point unanswerable windows at CLS, so every position lies inside.
    """
    return (ops.cross_entropy(outputs["start_logits"], batch["start_positions"])
            + ops.cross_entropy(outputs["end_logits"], batch["end_positions"])) / 2


def masked_lm(ops, outputs, batch):
    """Cross-entropy of the vocabulary scores at the masked positions only, their mean (labels -100 elsewhere),
    as transformers' *ForMaskedLM; a batch without a masked token contributes 0."""
    return ops.masked_cross_entropy(outputs["logits"], batch["labels"])


LOSSES = {"classification": classification, "regression": regression, "span": span, "masked_lm": masked_lm}
