"""Per-epoch monitoring metrics for training: confusion, per-class recall, balanced accuracy, the
seed's dead-class gate and the official metric's 1/2/4-weighted log loss.

Labels are class codes 0/1/2 (Normal/Mild, Moderate, Severe); -1 (a blank cell) is ignored
everywhere. A class with no true sample has recall NaN: balanced accuracy is the mean over the
classes present in ``y_true`` (as ``sklearn.metrics.balanced_accuracy_score``), and such a class is
never "dead" (it cannot be judged on this split).
"""
from __future__ import annotations

import numpy as np

from ..core.schema import BLANK, SEVERITY_WEIGHTS
from .official import weighted_log_loss

N_CLASSES = 3


def confusion(y_true, y_pred, n: int = N_CLASSES) -> np.ndarray:
    """(n, n) int64 counts, rows = true class, columns = predicted; rows with y_true == -1 skipped."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    keep = y_true != BLANK
    y_true, y_pred = y_true[keep], y_pred[keep]
    if ((y_true < 0) | (y_true >= n) | (y_pred < 0) | (y_pred >= n)).any():
        raise ValueError(f"class codes must be in 0..{n - 1} (or -1 in y_true)")
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def class_recalls(cm: np.ndarray) -> np.ndarray:
    """Recall of each class (diagonal / row sum); NaN for a class with no true sample."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in ``y_true`` (NaN if none is)."""
    return _mean_present(class_recalls(confusion(y_true, y_pred)))


def _mean_present(recalls: np.ndarray) -> float:
    present = ~np.isnan(recalls)
    return float(recalls[present].mean()) if present.any() else float("nan")


def dead_classes(recalls, min_recall: float = 0.2) -> list[int]:
    """Classes whose recall is below ``min_recall`` (the seed kept a checkpoint only with none);
    a NaN recall (class absent) is not dead."""
    r = np.asarray(recalls, dtype=np.float64)
    return [int(i) for i in np.flatnonzero(~np.isnan(r) & (r < min_recall))]


def epoch_metrics(y_true, probs, min_recall: float = 0.2) -> dict:
    """Monitoring metrics of predicted class probabilities ``probs`` (N, 3) against ``y_true`` (N,).

    Keys: balanced_accuracy, recall (3 floats, NaN = class absent), confusion (3x3 nested list),
    dead_classes, wlogloss (log loss weighted 1/2/4 by true class, rows normalised, as in the
    official metric's group terms).
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, N_CLASSES)
    if len(probs) != len(y_true):
        raise ValueError(f"{len(y_true)} labels but {len(probs)} probability rows")
    keep = y_true != BLANK
    y, p = y_true[keep], probs[keep]
    cm = confusion(y, p.argmax(axis=1))
    recalls = class_recalls(cm)
    p = p / p.sum(axis=1, keepdims=True)
    return {
        "balanced_accuracy": _mean_present(recalls),
        "recall": [float(r) for r in recalls],
        "confusion": cm.tolist(),
        "dead_classes": dead_classes(recalls, min_recall),
        "wlogloss": weighted_log_loss(y, p, np.asarray(SEVERITY_WEIGHTS)[y]),
    }
