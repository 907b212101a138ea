"""GLUE/RACE/BoolQ metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.data.glue import GLUE_TASKS
from tasks.metrics import METRICS, COMBINED_METRICS, accuracy, glue_metrics, predictions_from_logits

PREDICTED = [1, 1, 0, 0, 1]
GOLD = [1, 0, 0, 1, 1]  # TP 2 (0, 4), FP 1 (1), TN 1 (2), FN 1 (3)


def test_every_task_metric_is_defined():
    for task in GLUE_TASKS.values():
        assert set(task.metrics) <= set(METRICS) | set(COMBINED_METRICS) and task.main_metric in task.metrics


def test_mrpc_qqp_accuracy_and_f1():
    # acc 3/5; precision = recall = 2/3 so F1 = 2/3
    expected = {"acc": 0.6, "f1": 2 / 3, "acc_and_f1": (0.6 + 2 / 3) / 2}
    assert glue_metrics("mrpc", PREDICTED, GOLD) == pytest.approx(expected)
    assert glue_metrics("qqp", np.array(PREDICTED), np.array(GOLD)) == pytest.approx(expected)


def test_cola_matthews():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2)
    assert glue_metrics("cola", PREDICTED, GOLD) == pytest.approx({"mcc": 1 / 6})


def test_stsb_correlations():
    # x = 1,2,3; y = 1,2,4: deviations (-1,0,1) and (-4/3,-1/3,5/3); covariance sum 3, so r = 3 / sqrt(2 * 42/9)
    pearson = 3 / math.sqrt(2 * 42 / 9)
    assert glue_metrics("sts-b", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == pytest.approx(
        {"pearson": pearson, "spearmanr": 1.0, "corr": (pearson + 1.0) / 2})


@pytest.mark.parametrize("task", ["sst-2", "mnli", "mnli-mm", "qnli", "rte", "wnli"])
def test_accuracy_tasks(task):
    assert glue_metrics(task, [2, 0, 1, 1], [2, 1, 1, 0]) == {"acc": 0.5}


def test_accuracy_and_logits():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.3, 0.2], [0.0, 1.0]])
    assert predictions_from_logits(logits).tolist() == [1, 0, 0, 1]
    assert accuracy(predictions_from_logits(logits), [1, 0, 1, 1]) == 0.75
    race_choice_scores = np.array([[0.1, 0.2, 0.9, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert predictions_from_logits(race_choice_scores).tolist() == [2, 0]
    assert predictions_from_logits(np.array([[4.5], [0.25]]), regression=True).tolist() == [4.5, 0.25]


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        glue_metrics("rte", [0, 1], [0, 1, 1])
