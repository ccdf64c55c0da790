"""The official RSNA 2024 metric (README "Scoring"), and the submission format it reads.

Three condition-group terms (spinal, foraminal, subarticular): sample-weighted multi-class log loss,
weight 1/2/4 by the TRUE class, predicted rows normalised to sum to 1. A fourth term, any_severe:
per study, label = any spinal level Severe, prediction = max of the RAW submitted ``severe`` over
those levels, weight = the study's largest spinal row weight; binary log loss. Score = plain mean.

Subtleties, each chosen to match the competition's scorer:

* Clipping is sklearn 1.9's ``log_loss``: probabilities are clipped to ``[eps, 1 - eps]`` with
  ``eps = np.finfo(float64).eps`` AFTER our row normalisation and NOT renormalised afterwards
  (sklearn < 1.5 clipped first and renormalised; 1.9 does not). For the binary term the negative
  class is ``1 - p`` computed before clipping, as sklearn builds it.
* Blank labels are not scored: a blank cell needs no submission row (one may be present). In
  any_severe only a study's non-blank spinal levels count, for the label, the weight and the max of
  the prediction (the Kaggle solution file held only scored rows); a study whose 5 spinal levels
  are all blank is left out of any_severe.
* A group (or any_severe) with no scored row gives a NaN term, and then a NaN score.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.readers import read_sample_submission, read_train
from ..core.schema import (BLANK, CONDITIONS, GROUPS, LABEL_COLUMNS, LEVELS, SEVERITY_WEIGHTS, SPINAL,
                           SUBMISSION_COLUMNS, row_id)

TERMS = ("spinal", "foraminal", "subarticular", "any_severe")
EPS = np.finfo(np.float64).eps  # sklearn 1.9 log_loss: machine epsilon of the prediction dtype
_WEIGHTS = np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)
#: (condition, level) of each label column, in LABEL_COLUMNS order
_CELLS = tuple((c, lv) for c in CONDITIONS for lv in LEVELS)
_SHOW = 5  # how many offending row_ids an error message lists


def weighted_log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    """``sklearn.metrics.log_loss(y, p, sample_weight=w, labels=range(K))`` for rows that already sum
    to 1: clip to [eps, 1-eps], then sum(w * -log p[y]) / sum(w). NaN if there are no rows."""
    y = np.asarray(y, dtype=np.int64)
    if y.size == 0:
        return float("nan")
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    loss = -np.log(p[np.arange(y.size), y])
    return float(np.average(loss, weights=np.asarray(w, dtype=np.float64)))


def _first(ids, n=_SHOW) -> str:
    ids = list(ids)
    more = f" (+{len(ids) - n} more)" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more


def _check_values(sub: pd.DataFrame) -> None:
    """Every submitted row must be a usable probability row; errors name the first bad row_id."""
    p = sub[list(SUBMISSION_COLUMNS)].to_numpy(dtype=np.float64)
    ids = sub["row_id"].to_numpy()
    checks = (
        (~np.isfinite(p).all(axis=1), "has a NaN or infinite probability"),
        ((p < 0).any(axis=1), "has a negative probability"),
        ((p > 1).any(axis=1), "has a probability greater than 1"),
        (p.sum(axis=1) <= 0, "has probabilities summing to 0"),
    )
    for bad, what in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            values = dict(zip(SUBMISSION_COLUMNS, p[i].tolist()))
            raise InputError(f"submission row_id {ids[i]} {what}: {values} "
                             f"({int(bad.sum())} such row(s))")


def score_frames(labels: pd.DataFrame, submission: pd.DataFrame) -> dict:
    """Official score of ``submission`` (row_id + normal_mild, moderate, severe, as from
    ``read_sample_submission``) against ``labels`` (as from ``read_train``).

    Returns ``{"score", "spinal", "foraminal", "subarticular", "any_severe"}`` as floats; lower is
    better. Raises :class:`InputError` for missing, extra or duplicate row_ids and bad values.
    """
    for frame, cols, name in ((labels, ("study_id",) + LABEL_COLUMNS, "labels"),
                              (submission, ("row_id",) + SUBMISSION_COLUMNS, "submission")):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise InputError(f"{name}: missing column(s) {missing}")
    study_ids = labels["study_id"].to_numpy()
    y = labels[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)  # (S, 25)
    rids = np.array([row_id(s, c, lv) for s in study_ids for c, lv in _CELLS]).reshape(y.shape)

    sub = submission.reset_index(drop=True)
    dup = sub["row_id"].duplicated()
    if dup.any():
        raise InputError(f"submission: duplicate row_id(s) {_first(sub['row_id'][dup])}")
    known = set(rids.ravel().tolist())
    extra = [r for r in sub["row_id"] if r not in known]
    if extra:
        raise InputError(f"submission: {len(extra)} row_id(s) not in the labels: {_first(extra)}")
    given = set(sub["row_id"])
    lacking = [r for r in rids[y != BLANK] if r not in given]
    if lacking:
        raise InputError(f"submission: {len(lacking)} labelled row_id(s) missing: {_first(lacking)}")
    _check_values(sub)

    # (S, 25, 3) aligned to the labels; NaN only where a blank (unscored) cell has no row
    p = (sub.set_index("row_id")[list(SUBMISSION_COLUMNS)].reindex(rids.ravel())
         .to_numpy(dtype=np.float64).reshape(y.shape + (3,)))
    cond = np.array([c for c, _ in _CELLS])
    out = {}
    for group, conditions in GROUPS.items():
        scored = np.isin(cond, conditions)[None, :] & (y != BLANK)  # (S, 25)
        yg, pg = y[scored], p[scored]
        pg = pg / pg.sum(axis=1, keepdims=True)
        out[group] = weighted_log_loss(yg, pg, _WEIGHTS[yg])
    out["any_severe"] = _any_severe(y[:, cond == SPINAL], p[:, cond == SPINAL, 2])
    out["score"] = float(np.mean([out[t] for t in TERMS]))
    return {k: out[k] for k in ("score",) + TERMS}


def _any_severe(y: np.ndarray, severe: np.ndarray) -> float:
    """y, severe: (S, 5) spinal labels and raw submitted severe probabilities."""
    valid = y != BLANK
    keep = valid.any(axis=1)  # studies with at least one scored spinal level
    y, severe, valid = y[keep], severe[keep], valid[keep]
    label = (y == 2).any(axis=1).astype(np.int64)
    weight = np.where(valid, _WEIGHTS[np.where(valid, y, 0)], 0.0).max(axis=1)
    pred = np.where(valid, severe, -np.inf).max(axis=1)
    return weighted_log_loss(label, np.stack([1 - pred, pred], axis=1), weight)


def score_files(labels_csv, submission_csv) -> dict:
    """:func:`score_frames` of two CSV files in the Kaggle format (train.csv, submission.csv)."""
    labels = read_train(labels_csv)
    submission = read_sample_submission(submission_csv)
    try:
        return score_frames(labels, submission)
    except InputError as e:
        raise InputError(f"{Path(submission_csv)}: {e}") from None


def predictions_to_submission(rows: Iterable) -> pd.DataFrame:
    """Per-cell predictions ``(study_id, condition, level, p_normal, p_moderate, p_severe)`` -> the
    sample_submission frame (row_id, normal_mild, moderate, severe), rows normalised to sum to 1 and
    sorted by row_id. Write it with ``to_csv(path, index=False)``.

    A bad row here is a bug of the caller (model output), so it raises ``ValueError``.
    """
    ids, probs = [], []
    for study_id, condition, level, *p in rows:
        if condition not in CONDITIONS or level not in LEVELS or len(p) != 3:
            raise ValueError(f"bad prediction row {(study_id, condition, level, *p)!r}")
        ids.append(row_id(study_id, condition, level))
        probs.append(p)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, 3)
    total = probs.sum(axis=1, keepdims=True)
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | (total[:, 0] <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{ids[i]}: not a probability row {probs[i].tolist()}")
    out = pd.DataFrame(probs / total, columns=list(SUBMISSION_COLUMNS))
    out.insert(0, "row_id", ids)
    if out["row_id"].duplicated().any():
        raise ValueError(f"duplicate prediction for {_first(out['row_id'][out['row_id'].duplicated()])}")
    return out.sort_values("row_id", kind="stable").reset_index(drop=True)
