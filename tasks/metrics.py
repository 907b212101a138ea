"""Task metrics from scikit-learn/scipy: GLUE per task (names as transformers' run_glue reports them),
accuracy for RACE and BoolQ, and the official SQuAD scores (re-exported from tasks.data.squad)."""

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
