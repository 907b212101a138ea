"""Task metrics from scikit-learn/scipy: GLUE per task (names as transformers' run_glue reports them),
accuracy for RACE and BoolQ, the official SQuAD scores (re-exported from tasks.data.squad), and the
masked-LM loss and perplexity (as transformers' run_mlm.py reports them)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from tasks.data.glue import GlueTask, glue_task
from tasks.data.squad import squad_v1_scores, squad_v2_scores

__all__ = [
    "METRICS",
    "COMBINED_METRICS",
    "accuracy",
    "glue_metrics",
    "masked_lm_losses",
    "masked_lm_metrics",
    "predictions_from_logits",
    "squad_v1_scores",
    "squad_v2_scores",
]


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to the labels (RACE, BoolQ, GLUE "acc")."""
    return float(accuracy_score(labels, predictions))


def binary_f1(predictions, labels) -> float:
    """F1 of the positive class (label id 1), as MRPC and QQP report it."""
    return float(f1_score(labels, predictions, pos_label=1, average="binary"))


def mcc(predictions, labels) -> float:
    """Matthews correlation coefficient (CoLA)."""
    return float(matthews_corrcoef(labels, predictions))


def pearson(predictions, labels) -> float:
    return float(pearsonr(predictions, labels)[0])


def spearman(predictions, labels) -> float:
    return float(spearmanr(predictions, labels)[0])


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "acc": accuracy,
    "f1": binary_f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearmanr": spearman,
}
# name -> the metrics it averages
COMBINED_METRICS: dict[str, tuple[str, ...]] = {"acc_and_f1": ("acc", "f1"), "corr": ("pearson", "spearmanr")}


def predictions_from_logits(logits, regression: bool = False) -> np.ndarray:
    """Label ids (argmax over the last axis) or, for regression, the scores of a [n] or [n, 1] output."""
    logits = np.asarray(logits)
    if regression:
        return logits.reshape(len(logits)).astype(np.float64)
    return logits.argmax(axis=-1)


def glue_metrics(task: str | GlueTask, predictions, labels) -> dict[str, float]:
    """The task's metrics (e.g. MRPC: acc, f1, acc_and_f1) from label ids or, for STS-B, scores."""
    task = glue_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions have shape {predictions.shape} but labels {labels.shape}")
    results: dict[str, float] = {}
    for name in task.metrics:
        if name in COMBINED_METRICS:
            results[name] = float(np.mean([METRICS[part](predictions, labels) for part in COMBINED_METRICS[name]]))
        else:
            results[name] = METRICS[name](predictions, labels)
    return results


def masked_lm_losses(logits, labels, ignore_index: int = -100) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (sum of the cross-entropies at the labelled positions, in float64; their count).

    logits [rows, seq, vocab], labels [rows, seq] with `ignore_index` where a position is not scored.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    rows, positions = np.nonzero(labels != ignore_index)
    scored = logits[rows, positions].astype(np.float64)  # [masked, vocab]: only the masked positions' scores
    peak = scored.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(scored - peak).sum(axis=-1)) + peak[:, 0]
    losses = log_norm - scored[np.arange(len(rows)), labels[rows, positions]]
    sums = np.bincount(rows, weights=losses, minlength=len(labels))
    return sums, np.bincount(rows, minlength=len(labels))


def masked_lm_metrics(loss_sums, counts) -> dict[str, float]:
    """loss (the mean over every masked token), perplexity = exp(loss), and the number of masked tokens."""
    total = int(np.sum(counts))
    if total == 0:
        raise ValueError("no masked token to score")
    loss = float(np.sum(loss_sums)) / total
    return {"loss": loss, "perplexity": float(np.exp(loss)) if loss < 709 else float("inf"), "masked_tokens": total}
