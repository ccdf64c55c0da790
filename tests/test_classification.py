"""Per-epoch monitoring metrics against sklearn, dead-class gate, blank (-1) labels ignored."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, log_loss

from lsdc.metric.classification import balanced_accuracy, class_recalls, confusion, dead_classes, epoch_metrics


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, p=[0.7, 0.2, 0.1], size=200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, size=200))
    np.testing.assert_array_equal(confusion(y, pred), confusion_matrix(y, pred, labels=[0, 1, 2]))
    assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred), rel=1e-12)


def test_absent_class_is_nan_and_skipped_like_sklearn():
    y = np.array([0, 0, 1, 1, 1])
    pred = np.array([0, 2, 1, 2, 1])  # class 2 predicted but never true
    recalls = class_recalls(confusion(y, pred))
    assert recalls[:2].tolist() == [0.5, pytest.approx(2 / 3)] and math.isnan(recalls[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the class absent from y_true
        expected = balanced_accuracy_score(y, pred)
    assert balanced_accuracy(y, pred) == pytest.approx(expected)
    assert dead_classes(recalls, 0.2) == []  # an absent class cannot be judged, so is not dead


def test_blank_labels_ignored():
    y = np.array([0, -1, 1, 2, -1])
    pred = np.array([0, 2, 1, 0, 1])
    keep = y != -1
    np.testing.assert_array_equal(confusion(y, pred), confusion_matrix(y[keep], pred[keep], labels=[0, 1, 2]))
    assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y[keep], pred[keep]))
    assert math.isnan(balanced_accuracy([-1, -1], [0, 1]))


def test_dead_classes():
    assert dead_classes([0.9, 0.19, 0.5], min_recall=0.2) == [1]
    assert dead_classes([0.9, 0.2, 0.0], min_recall=0.2) == [2]
    assert dead_classes([0.1, 0.1, 0.1], min_recall=0.05) == []


def test_epoch_metrics():
    rng = np.random.default_rng(0)
    y = rng.choice([-1, 0, 1, 2], p=[0.1, 0.6, 0.2, 0.1], size=300)
    logits = rng.normal(size=(300, 3)) + 2.0 * np.eye(3)[np.clip(y, 0, 2)]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = epoch_metrics(y, probs, min_recall=0.2)
    keep = y != -1
    pred = probs[keep].argmax(axis=1)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[keep], pred))
    assert m["confusion"] == confusion_matrix(y[keep], pred, labels=[0, 1, 2]).tolist()
    assert len(m["recall"]) == 3 and m["dead_classes"] == dead_classes(m["recall"], 0.2)
    w = np.array([1.0, 2.0, 4.0])[y[keep]]
    assert m["wlogloss"] == pytest.approx(log_loss(y[keep], probs[keep], sample_weight=w, labels=[0, 1, 2]))


def test_epoch_metrics_flags_a_dead_class():
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.tile([0.6, 0.3, 0.1], (6, 1))  # always predicts Normal/Mild
    m = epoch_metrics(y, probs, min_recall=0.2)
    assert m["dead_classes"] == [1, 2] and m["recall"] == [1.0, 0.0, 0.0]
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)
