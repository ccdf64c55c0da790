"""Temperature calibration of one run (= one view = one condition group) on its out-of-fold predictions.

    p_T = softmax(log p / T)

T is chosen by a 1-D search (a log grid over T_RANGE = [0.5, 3] that includes 1, then a golden-section
refinement around the best grid point; below 0.5 a near-perfect OOF fold, of a few dozen rows, pulls T
to the sharpest end, where any test mistake costs a lot) minimising the run's share of the official score:
mean(spinal, any_severe) for Sagittal T2, foraminal for Sagittal T1, subarticular for Axial T2
(``lsdc.train.report.view_score``, i.e. ``score_frames`` itself). T = 1 is a candidate, so the
fitted score is never worse than the raw one on the OOF rows. Written to RUN_DIR/calibration.json.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.schema import CONDITION_VIEW

CALIBRATION_FILE = "calibration.json"
PROBS = ("p0", "p1", "p2")
T_RANGE = (0.5, 3.0)


def apply_temperature(p: np.ndarray, t: float) -> np.ndarray:
    """Rows of probabilities (n, 3) sharpened (t < 1) or softened (t > 1); rows sum to 1."""
    if t == 1.0 or not len(p):
        return np.asarray(p, np.float64)
    logp = np.log(np.clip(np.asarray(p, np.float64), 1e-12, 1.0)) / t
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def _score(view: str, pred: pd.DataFrame, t: float) -> float:
    from ..train.report import view_score
    q = pred.copy()
    q[list(PROBS)] = apply_temperature(pred[list(PROBS)].to_numpy(), t)
    return float(view_score(view, q)["score"])


def fit_temperature(pred: pd.DataFrame, view: str) -> dict:
    """{"temperature", "score_before", "score_after", "rows"} on per-sample OOF predictions (columns
    study_id, condition, level, label, p0, p1, p2)."""
    pred = pred[pred["label"] >= 0]
    if not len(pred):
        return {"temperature": 1.0, "score_before": math.nan, "score_after": math.nan, "rows": 0}
    grid = np.unique(np.r_[np.exp(np.linspace(np.log(T_RANGE[0]), np.log(T_RANGE[1]), 21)), 1.0])
    scores = np.array([_score(view, pred, t) for t in grid])
    i = int(np.nanargmin(scores))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best_t, best_s = float(grid[i]), float(scores[i])
    g = (math.sqrt(5) - 1) / 2  # golden-section search on [lo, hi]
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    sc, sd = _score(view, pred, c), _score(view, pred, d)
    for _ in range(12):
        if sc < sd:
            b, d, sd = d, c, sc
            c = b - g * (b - a)
            sc = _score(view, pred, c)
        else:
            a, c, sc = c, d, sd
            d = a + g * (b - a)
            sd = _score(view, pred, d)
    for t, s in ((c, sc), (d, sd)):
        if s < best_s:
            best_t, best_s = float(t), float(s)
    return {"temperature": best_t, "score_before": float(scores[np.argmin(np.abs(grid - 1.0))]),
            "score_after": best_s, "rows": int(len(pred))}


def fit_run(run_dir) -> dict | None:
    """Fit on RUN_DIR/oof.csv (else its fold*/predictions.csv) and write RUN_DIR/calibration.json;
    None when the run has no predictions to fit on."""
    run_dir = Path(run_dir)
    if (run_dir / "oof.csv").is_file():
        pred, source = pd.read_csv(run_dir / "oof.csv"), "oof.csv"
    else:
        files = sorted(run_dir.glob("fold*/predictions.csv"))
        if not files:
            return None
        pred = pd.concat([pd.read_csv(p) for p in files], ignore_index=True)
        source = ", ".join(str(p.relative_to(run_dir)) for p in files)
    views = {CONDITION_VIEW[c] for c in pred["condition"].unique()}
    if len(views) != 1:
        return None
    view = views.pop()
    out = {"view": view, "source": source, **fit_temperature(pred, view)}
    (run_dir / CALIBRATION_FILE).write_text(json.dumps(out, indent=1))
    return out


def load_or_fit(run_dir) -> dict | None:
    """RUN_DIR/calibration.json, fitted first when it is missing (None when nothing to fit on)."""
    path = Path(run_dir) / CALIBRATION_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return fit_run(run_dir)
