"""Calibration of one run (= one view) on its out-of-fold predictions, built so that it cannot make a
run worse than its raw self by more than noise.

Three steps, applied in this order to a run's per-cell probabilities (a cell predicted by several
samples, e.g. two axial series, first gets their mean, as the metric and ``lsdc predict`` see it):

1. **temperature** ``p <- softmax(log p / T)``: T searched over T_RANGE = [0.5, 3] (a log grid that
   includes 1, then a golden-section refinement) minimising the run's share of the official score
   (mean(spinal, any_severe) for Sagittal T2, foraminal for Sagittal T1, subarticular for Axial T2:
   :func:`lsdc.train.report.view_score`). Two guards keep a small or lucky fold from sharpening:
   sharpening (T < 1) is allowed only when every class has at least MIN_CLASS_ROWS labelled cells,
   and a sharpening log T is shrunk towards 0 by ``n / (n + SHRINK_ROWS)`` (n = labelled cells). On 45
   spinal rows that a tiny model happened to get right, the unguarded search picked T = 0.5 and the
   test studies scored worse than the constant prior. Softening (T up to 3) is kept as fitted: its
   cost is bounded, and shrinking it cost the demo's seed 0.07 of skill.
2. **any-severe scale** (Sagittal T2 only): in every study, the spinal level with the highest severe
   probability gets ``p_severe <- s * p_severe`` (row renormalised); the any-severe term reads that
   maximum (the 2nd-place RSNA 2024 team scaled it by 1.25). s on SEVERE_SCALES (1 included), fitted
   on the study-level rows, allowed above 1 only with MIN_CLASS_ROWS studies with and without a
   severe level, and shrunk in log space by ``studies / (studies + SHRINK_STUDIES)``.
3. **prior mix** ``p <- (1 - w) p + w prior(cell)``: the prior is :func:`lsdc.metric.baselines.fit_prior`
   of the same rows' labels (the one prior of the project); w on PRIOR_WEIGHTS, small (0.01 to
   0.1), so no cell is ever certain and one confidently wrong test cell costs at most
   ``-log(w * prior)`` nats, while a validation fold that looks worse than the test set cannot
   pull the model half way to the prior (a grid up to 0.5 did, on the demo's seed).

Each step keeps its identity (T = 1, s = 1, w = PRIOR_WEIGHT_MIN) a candidate, so the fitted score is
never worse than the raw one on the rows it was fitted on beyond the floor's cost. The result is
RUN_DIR/calibration.json, read back by :func:`load_or_fit` and applied by :func:`apply_calibration`.
A run trained with ``--fold all`` is fitted on all of its out-of-fold rows (``oof.csv``); a one-fold
run on that fold's validation rows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.schema import CONDITION_VIEW, SPINAL, SUBMISSION_COLUMNS
from ..metric.baselines import fit_prior

CALIBRATION_FILE = "calibration.json"
CALIBRATION_VERSION = 2  # 1: temperature only (fitted unguarded); refitted when read
PROBS = ("p0", "p1", "p2")
CELL_KEYS = ("study_id", "condition", "level")
T_RANGE = (0.5, 3.0)
MIN_CLASS_ROWS = 10
SHRINK_ROWS = 100
SEVERE_SCALES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.4, 1.6, 2.0)
SHRINK_STUDIES = 50
PRIOR_WEIGHT_MIN = 0.01
PRIOR_WEIGHTS = (PRIOR_WEIGHT_MIN, 0.02, 0.05, 0.1)
IDENTITY = {"temperature": 1.0, "severe_scale": 1.0, "prior_weight": 0.0}


def apply_temperature(p: np.ndarray, t: float) -> np.ndarray:
    """Rows of probabilities (n, 3) sharpened (t < 1) or softened (t > 1); rows sum to 1."""
    if t == 1.0 or not len(p):
        return np.asarray(p, np.float64)
    logp = np.log(np.clip(np.asarray(p, np.float64), 1e-12, 1.0)) / t
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def scale_study_severe(cells: pd.DataFrame, p: np.ndarray, s: float) -> np.ndarray:
    """``p`` (rows of ``cells``) with each study's highest spinal severe probability scaled by s and
    its row renormalised; other rows unchanged."""
    p = np.array(p, np.float64)
    if s == 1.0 or not len(p):
        return p
    spinal = np.flatnonzero(cells["condition"].to_numpy() == SPINAL)
    if not len(spinal):
        return p
    order = pd.DataFrame({"study": cells["study_id"].to_numpy()[spinal], "severe": p[spinal, 2], "row": spinal})
    top = order.sort_values(["study", "severe"], ascending=[True, False]).drop_duplicates("study")["row"].to_numpy()
    q = p[top]
    q[:, 2] *= s
    p[top] = q / q.sum(axis=1, keepdims=True)
    return p


def _prior_rows(cells: pd.DataFrame, prior: dict) -> np.ndarray:
    """(n, 3) the prior of each row's (condition, level) cell; ``prior`` as stored in the file."""
    return np.array([prior[c][lv] for c, lv in zip(cells["condition"], cells["level"])], np.float64).reshape(-1, 3)


def transform(cells: pd.DataFrame, p: np.ndarray, params: dict, prior: dict | None) -> np.ndarray:
    """The three steps of the module docstring on the rows ``p`` of ``cells`` (study_id, condition,
    level); the prior mix needs ``prior`` ({condition: {level: [3]}}) when its weight is > 0."""
    q = apply_temperature(p, float(params.get("temperature", 1.0)))
    q = scale_study_severe(cells, q, float(params.get("severe_scale", 1.0)))
    w = float(params.get("prior_weight", 0.0))
    if w > 0 and len(q):
        q = (1 - w) * q + w * _prior_rows(cells, prior)
    return q


def apply_calibration(cells: pd.DataFrame, calibration: dict | None) -> pd.DataFrame:
    """``cells`` (one row per (study, condition, level) of one run: columns study_id, condition,
    level, p0, p1, p2) with the run's calibration applied; unchanged for None."""
    if not calibration or not len(cells):
        return cells
    out = cells.copy()
    out[list(PROBS)] = transform(cells, cells[list(PROBS)].to_numpy(np.float64), calibration, calibration.get("prior"))
    return out


def to_cells(pred: pd.DataFrame) -> pd.DataFrame:
    """Per-sample predictions -> one row per (study, condition, level): the samples' mean probabilities
    (and their label), in a stable order."""
    agg = {"p0": ("p0", "mean"), "p1": ("p1", "mean"), "p2": ("p2", "mean")}
    if "label" in pred.columns:
        agg = {"label": ("label", "max"), **agg}
    return pred.groupby(list(CELL_KEYS), sort=True).agg(**agg).reset_index()


def _score(view: str, cells: pd.DataFrame, p: np.ndarray) -> float:
    from ..train.report import view_score
    q = cells.copy()
    q[list(PROBS)] = p
    return float(view_score(view, q)["score"])


def _golden(f, lo: float, hi: float, steps: int = 12) -> tuple[float, float]:
    """(x, f(x)) of a golden-section search for the minimum of f on [lo, hi]."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (c, fc) if fc < fd else (d, fd)


def shrink(value: float, n: int, n0: int) -> float:
    """A multiplicative parameter pulled towards 1 in log space by ``n / (n + n0)``."""
    return float(math.exp(math.log(value) * n / (n + n0))) if value > 0 else 1.0


def fit_temperature(cells: pd.DataFrame, view: str, p: np.ndarray) -> dict:
    """{"temperature", "temperature_fitted", "sharpening_allowed"}: module docstring, step 1."""
    labels = cells["label"].to_numpy()
    counts = np.bincount(labels[labels >= 0], minlength=3)
    sharpen = bool((counts >= MIN_CLASS_ROWS).all())
    lo = T_RANGE[0] if sharpen else 1.0
    grid = np.unique(np.r_[np.exp(np.linspace(np.log(lo), np.log(T_RANGE[1]), 21)), 1.0])

    def f(t):
        return _score(view, cells, apply_temperature(p, t))

    scores = np.array([f(t) for t in grid])
    i = int(np.nanargmin(scores))
    best_t, best_s = float(grid[i]), float(scores[i])
    t, s = _golden(f, grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)])
    if s < best_s:
        best_t = float(t)
    t = best_t if best_t >= 1.0 else shrink(best_t, int(counts.sum()), SHRINK_ROWS)
    return {"temperature": t, "temperature_fitted": best_t, "sharpening_allowed": sharpen}


def fit_severe_scale(cells: pd.DataFrame, view: str, p: np.ndarray) -> dict:
    """{"severe_scale", "severe_scale_fitted"}: module docstring, step 2 (1.0 for views without the
    spinal condition)."""
    spinal = cells[(cells["condition"] == SPINAL) & (cells["label"] >= 0)]
    if not len(spinal):
        return {"severe_scale": 1.0, "severe_scale_fitted": 1.0}
    any_severe = spinal.groupby("study_id")["label"].max().to_numpy() == 2
    studies = len(any_severe)
    up = min(int(any_severe.sum()), int((~any_severe).sum())) >= MIN_CLASS_ROWS
    grid = [s for s in SEVERE_SCALES if s <= 1.0 or up]
    scores = [_score(view, cells, scale_study_severe(cells, p, s)) for s in grid]
    fitted = float(grid[int(np.nanargmin(scores))])
    return {"severe_scale": shrink(fitted, studies, SHRINK_STUDIES), "severe_scale_fitted": fitted}


def fit_prior_weight(cells: pd.DataFrame, view: str, p: np.ndarray, prior: dict) -> float:
    """Module docstring, step 3: the weight of PRIOR_WEIGHTS that scores best."""
    rows = _prior_rows(cells, prior)
    scores = [_score(view, cells, (1 - w) * p + w * rows) for w in PRIOR_WEIGHTS]
    return float(PRIOR_WEIGHTS[int(np.nanargmin(scores))])


def prior_table(cells: pd.DataFrame) -> dict:
    """{condition: {level: [p0, p1, p2]}} of fit_prior on the labels of ``cells``' conditions."""
    prior = fit_prior(cells[["study_id", "condition", "level", "label"]])
    prior = prior[prior["condition"].isin(set(cells["condition"]))]
    out: dict = {}
    for c, lv, *p in prior[["condition", "level", *SUBMISSION_COLUMNS]].itertuples(index=False):
        out.setdefault(c, {})[lv] = [float(v) for v in p]
    return out


def fit_calibration(pred: pd.DataFrame, view: str) -> dict:
    """The calibration of per-sample predictions (columns study_id, condition, level, label, p0, p1,
    p2) of one view: the three steps' parameters, the prior, and the view's score before and after
    on these rows."""
    cells = to_cells(pred)
    cells = cells[cells["label"] >= 0].reset_index(drop=True)
    if not len(cells):
        return {**IDENTITY, "score_before": math.nan, "score_after": math.nan, "rows": 0, "prior": {}}
    p = cells[list(PROBS)].to_numpy(np.float64)
    out = fit_temperature(cells, view, p)
    q = apply_temperature(p, out["temperature"])
    out.update(fit_severe_scale(cells, view, q))
    q = scale_study_severe(cells, q, out["severe_scale"])
    prior = prior_table(cells)
    out["prior_weight"] = fit_prior_weight(cells, view, q, prior)
    out["prior"] = prior
    out["score_before"] = _score(view, cells, p)
    out["score_after"] = _score(view, cells, transform(cells, p, out, prior))
    out["rows"] = int(len(cells))
    return out


def run_predictions(run_dir) -> tuple[pd.DataFrame | None, str]:
    """A run's out-of-fold predictions and where they came from: oof.csv (``--fold all``), else every
    fold's predictions.csv; (None, "") when it has none."""
    run_dir = Path(run_dir)
    if (run_dir / "oof.csv").is_file():
        return pd.read_csv(run_dir / "oof.csv"), "oof.csv"
    files = sorted(run_dir.glob("fold*/predictions.csv"))
    if not files:
        return None, ""
    return (pd.concat([pd.read_csv(p) for p in files], ignore_index=True),
            ", ".join(str(p.relative_to(run_dir)) for p in files))


def fit_run(run_dir) -> dict | None:
    """Fit on the run's out-of-fold rows and write RUN_DIR/calibration.json; None when the run has no
    predictions to fit on."""
    run_dir = Path(run_dir)
    pred, source = run_predictions(run_dir)
    if pred is None:
        return None
    views = {CONDITION_VIEW[c] for c in pred["condition"].unique()}
    if len(views) != 1:
        return None
    view = views.pop()
    out = {"version": CALIBRATION_VERSION, "view": view, "source": source, **fit_calibration(pred, view)}
    (run_dir / CALIBRATION_FILE).write_text(json.dumps(out, indent=1))
    return out


def load_or_fit(run_dir) -> dict | None:
    """RUN_DIR/calibration.json, fitted first when it is missing or of an older version (None when
    there is nothing to fit on)."""
    path = Path(run_dir) / CALIBRATION_FILE
    if path.is_file():
        c = json.loads(path.read_text())
        if c.get("version") == CALIBRATION_VERSION:
            return c
    return fit_run(run_dir)
