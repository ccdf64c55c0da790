"""Every score against two references: the best constant prediction (the prior) and an oracle (the ceiling).

**Prior.** For one (condition, level) cell with ``n_k`` training labels of class k (blanks excluded)
and row weight ``w_k`` = 1/2/4, a constant prediction ``p`` costs

    L(p) = -sum_k w_k n_k log p_k / sum_k w_k n_k.

This is the cross-entropy of ``p`` against ``q_k = w_k n_k / sum_j w_j n_j``, i.e. ``H(q) + KL(q || p)``,
so ``p = q`` is the unique minimum (Gibbs' inequality; Lagrange: d/dp_k = -w_k n_k / p_k + lambda = 0
gives ``p_k`` proportional to ``w_k n_k``), and the minimum is the entropy ``H(q)``. A group term of the
official metric is a weight-pooled sum over its cells, so the cell-wise optimum is also the optimum
constant-per-cell for every group term. (The any_severe term takes max(severe) of the same rows; it is
scored as it falls, not optimised separately.)

Fallbacks: a cell with no label uses its condition's labels pooled over the five levels (the same
formula); a condition with no label at all gets the uniform (1/3, 1/3, 1/3).

**Pseudocount.** The prior is ``p_k`` proportional to ``w_k (n_k + a)`` with ``a =
PRIOR_PSEUDOCOUNT`` (0.5) unless a user asks otherwise. ``a = 0`` is the exact optimum above ON THE
TRAINING LABELS, but with few training studies a class never seen in a cell gets probability 0, which
the metric clips to machine eps, ~36 nats per such row of new studies: on the demo's 48-study
train.csv the prior scores 1.70 on the test studies with ``a = 0`` and 0.80 with ``a = 0.5``, so the
former is a straw man. One constant, one function: ``lsdc score --prior-from``, training's metrics,
the demo and ``lsdc predict``'s fallback cells all call :func:`fit_prior` with its default, so their
priors agree.

**Ceiling.** An oracle submission (e.g. the exact posterior of every cell, which the synthetic
generator writes as ``test_oracle.csv``) scored like any submission. Note that a raw posterior ``pi``
is NOT the best submission under this metric: by the same argument as above the expected loss of a
row is least at ``p_k`` proportional to ``w_k pi_k``, so ``tilt_oracle`` (CLI ``--tilt-oracle``)
scores :func:`weighted_optimum` of the file instead, the ceiling that matches the prior's tilt (a
model trained with the class-weighted loss can beat an untilted one). Neither is the optimum of
any_severe (max of the severe column, not P(any level Severe)), whose ceiling can lie above its prior.

**Skill** of a score ``m``: ``(prior - m) / (prior - ceiling)``; 0 = no better than the prior, 1 = as
good as the oracle (it can be below 0, and above 1 by chance on a small set). None where there is no
ceiling or no prior, where a value is NaN, or where the ceiling does not beat the prior (prior <= ceiling:
the ratio would be unbounded or of the wrong sign).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.readers import read_sample_submission, read_train
from ..core.schema import BLANK, CONDITIONS, LABEL_COLUMNS, LEVELS, SEVERITY_WEIGHTS, SUBMISSION_COLUMNS, row_id
from .official import TERMS, _check_values, score_files, score_frames

#: (condition, level) of each label column, in LABEL_COLUMNS order
CELLS = tuple((c, lv) for c in CONDITIONS for lv in LEVELS)
PRIOR_COLUMNS = ("condition", "level", *SUBMISSION_COLUMNS, "labelled", "source")
PRED_PROBS = ("p0", "p1", "p2")  # probability columns of a training prediction frame (lsdc.train)
_W = np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)
#: the prior's pseudocount a (p_k proportional to w_k (n_k + a)): small enough to leave a cell's
#: well-sampled classes as they are, large enough that a class a small training set never shows in a
#: cell does not cost ~36 nats per row (module docstring)
PRIOR_PSEUDOCOUNT = 0.5
_CELL_INDEX = {cell: i for i, cell in enumerate(CELLS)}


# --- the prior ------------------------------------------------------------------------------------
def best_constant(counts, pseudocount: float) -> np.ndarray:
    """``p_k = w_k (n_k + a) / sum_j w_j (n_j + a)`` for class counts ``counts`` (n0, n1, n2) and
    pseudocount ``a``; uniform if that is all 0. With ``a = 0`` it is the constant minimising the
    1/2/4-weighted log loss of those rows. (The prior is :func:`fit_prior`, which chooses ``a``.)"""
    weighted = _W * (np.asarray(counts, dtype=np.float64) + pseudocount)
    total = weighted.sum()
    return weighted / total if total > 0 else np.full(3, 1 / 3)


def class_counts(labels: pd.DataFrame) -> np.ndarray:
    """(25, 3) counts of Normal/Mild, Moderate, Severe per cell (CELLS order), blanks excluded.

    ``labels`` is either train.csv-format (study_id + the 25 label columns, codes -1/0/1/2, as from
    :func:`lsdc.core.readers.read_train`) or long (condition, level, label, as the store index and the
    training loop's prediction frames are); a long frame with study_id counts each (study, condition,
    level) once, so a cell seen by two series is one label.
    """
    counts = np.zeros((len(CELLS), 3), dtype=np.int64)
    if all(c in labels.columns for c in LABEL_COLUMNS):
        codes = labels[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)
        _check_codes(codes)
        for k in range(3):
            counts[:, k] = (codes == k).sum(axis=0)
        return counts
    if all(c in labels.columns for c in ("condition", "level", "label")):
        long = labels
        if "study_id" in long.columns:
            long = long.drop_duplicates(["study_id", "condition", "level"])
        codes = long["label"].to_numpy(dtype=np.int64)
        _check_codes(codes)
        unknown = [cell for cell in zip(long["condition"], long["level"]) if cell not in _CELL_INDEX]
        if unknown:
            raise ValueError(f"labels: unknown (condition, level) {unknown[0]!r} ({len(unknown)} row(s))")
        cell = np.array([_CELL_INDEX[c] for c in zip(long["condition"], long["level"])], dtype=np.int64)
        keep = codes != BLANK
        np.add.at(counts, (cell[keep], codes[keep]), 1)
        return counts
    raise ValueError("labels: need the 25 train.csv label columns or condition, level and label columns; "
                     f"found {list(labels.columns)}")


def _check_codes(codes: np.ndarray) -> None:
    bad = ~np.isin(codes, (BLANK, 0, 1, 2))
    if bad.any():
        raise ValueError(f"labels: code {codes[bad].ravel()[0]} is not -1 (blank), 0, 1 or 2")


def fit_prior(labels: pd.DataFrame, pseudocount: float = PRIOR_PSEUDOCOUNT) -> pd.DataFrame:
    """The best constant prediction of every (condition, level) cell, fitted on training ``labels``
    (either form :func:`class_counts` takes) with ``pseudocount`` (module docstring; 0 = the exact
    in-sample optimum). THE prior: every caller keeps the default unless a user asks otherwise.

    Returns 25 rows (CELLS order): condition, level, normal_mild, moderate, severe (summing to 1),
    labelled (the cell's non-blank label count) and source: ``cell`` (its own labels), ``condition``
    (no label: its condition's five levels pooled) or ``uniform`` (no label for the condition at all).
    """
    if pseudocount < 0 or not math.isfinite(pseudocount):
        raise ValueError(f"pseudocount must be a finite number >= 0, not {pseudocount!r}")
    counts = class_counts(labels)
    by_condition = {c: counts[[_CELL_INDEX[(c, lv)] for lv in LEVELS]].sum(axis=0) for c in CONDITIONS}
    rows = []
    for (c, lv), n in zip(CELLS, counts):
        if n.sum() > 0:
            p, source = best_constant(n, pseudocount), "cell"
        elif by_condition[c].sum() > 0:
            p, source = best_constant(by_condition[c], pseudocount), "condition"
        else:
            p, source = np.full(3, 1 / 3), "uniform"
        rows.append((c, lv, *p.tolist(), int(n.sum()), source))
    return pd.DataFrame(rows, columns=list(PRIOR_COLUMNS))


def prior_submission(prior: pd.DataFrame, study_ids) -> pd.DataFrame:
    """The prior as a sample_submission frame (row_id, normal_mild, moderate, severe): all 25 rows of
    every study in ``study_ids``, sorted by row_id (as :func:`predictions_to_submission` writes)."""
    ids = sorted({int(s) for s in study_ids})
    p = prior.set_index(["condition", "level"]).loc[list(CELLS), list(SUBMISSION_COLUMNS)].to_numpy(np.float64)
    out = pd.DataFrame(np.tile(p, (len(ids), 1)), columns=list(SUBMISSION_COLUMNS))
    out.insert(0, "row_id", [row_id(s, c, lv) for s in ids for c, lv in CELLS])
    return out.sort_values("row_id", kind="stable").reset_index(drop=True)


def score_prior(labels: pd.DataFrame, prior: pd.DataFrame) -> dict:
    """The official score (:func:`score_frames`, same keys) of the prior on the studies of ``labels``."""
    return score_frames(labels, prior_submission(prior, labels["study_id"]))


def prior_predictions(pred: pd.DataFrame, prior) -> pd.DataFrame:
    """``pred`` (a training prediction frame: condition, level and p0, p1, p2, e.g. out-of-fold rows)
    with p0..p2 replaced by the prior's probabilities of each row's cell.

    ``prior`` is one :func:`fit_prior` frame, or ``{fold: prior}`` to give each row the prior fitted
    without its fold (then ``pred`` needs a ``fold`` column). Score the result exactly as the model's
    rows, e.g. ``lsdc.train.report.view_score(view, prior_predictions(oof, priors))``.
    """
    out = pred.copy()
    table = {None: prior} if isinstance(prior, pd.DataFrame) else dict(prior)
    folds = [None] * len(out) if isinstance(prior, pd.DataFrame) else out["fold"].tolist()
    lookup = {f: {(c, lv): p for c, lv, *p in pr[["condition", "level", *SUBMISSION_COLUMNS]].itertuples(index=False)}
              for f, pr in table.items()}
    missing = sorted({f for f in folds if f not in lookup}, key=str)
    if missing:
        raise ValueError(f"no prior for fold(s) {missing}")
    cells = zip(out["condition"], out["level"])
    probs = np.array([lookup[f][cell] for f, cell in zip(folds, cells)], dtype=np.float64).reshape(-1, 3)
    for k, col in enumerate(PRED_PROBS):
        out[col] = probs[:, k]
    return out


def fold_priors(labels: pd.DataFrame, folds, pseudocount: float = PRIOR_PSEUDOCOUNT) -> dict:
    """``{k: fit_prior(labels of every fold but k)}`` for each fold k in ``folds`` (one fold number per
    row of ``labels``, e.g. ``lsdc.train.folds.assign_folds(index, n, seed)``): the prior each
    out-of-fold row would have been given by the training labels of its fold's run."""
    folds = np.asarray(folds)
    if len(folds) != len(labels):
        raise ValueError(f"{len(folds)} fold numbers for {len(labels)} label rows")
    return {int(k) if isinstance(k, (int, np.integer)) else k: fit_prior(labels[folds != k], pseudocount)
            for k in np.unique(folds).tolist()}


# --- skill ----------------------------------------------------------------------------------------
def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def skill(model, prior, ceiling) -> float | None:
    """``(prior - model) / (prior - ceiling)``; None when any is missing or NaN, or when the ceiling
    does not beat the prior (prior - ceiling <= 1e-12 relative: the ratio would be unbounded or of the
    wrong sign)."""
    if not (_finite(model) and _finite(prior) and _finite(ceiling)):
        return None
    gap = float(prior) - float(ceiling)
    if gap <= 1e-12 * max(1.0, abs(float(prior))):
        return None
    return (float(prior) - float(model)) / gap


def weighted_optimum(posterior: pd.DataFrame) -> pd.DataFrame:
    """The submission that minimises the expected 1/2/4-weighted log loss of rows whose class
    probabilities are ``posterior`` (sample_submission form): ``p_k = w_k pi_k / sum_j w_j pi_j``, the
    same tilt as the prior's (a row's expected loss sum_k pi_k w_k (-log p_k) is a cross-entropy
    against the tilted posterior). Scoring a raw posterior instead leaves that gain to any model
    trained with the class-weighted loss, so its "ceiling" can be beaten. (any_severe takes the max
    of the tilted severe column as it falls; that is not the optimum of that term.)"""
    out = posterior.copy()
    p = out[list(SUBMISSION_COLUMNS)].to_numpy(dtype=np.float64) * _W
    total = p.sum(axis=1, keepdims=True)
    out[list(SUBMISSION_COLUMNS)] = np.divide(p, total, out=np.full_like(p, np.nan), where=total > 0)
    return out


def combine(model: dict, prior: dict | None = None, ceiling: dict | None = None) -> dict:
    """One report from three official-score dicts (``score`` + the four terms); prior/ceiling None
    when not asked for. Keys: today's ``score`` and terms (the model), ``prior``, ``ceiling``, ``skill``
    (overall) and ``terms`` = ``{term: {"model", "prior", "ceiling", "skill"}}`` for the four terms."""
    def get(d, k):
        return None if d is None else float(d[k])
    out = {k: float(model[k]) for k in ("score",) + TERMS}
    out["prior"], out["ceiling"] = get(prior, "score"), get(ceiling, "score")
    out["skill"] = skill(out["score"], out["prior"], out["ceiling"])
    out["terms"] = {t: {"model": float(model[t]), "prior": get(prior, t), "ceiling": get(ceiling, t),
                        "skill": skill(model[t], get(prior, t), get(ceiling, t))} for t in TERMS}
    return out


def report_frames(labels: pd.DataFrame, submission: pd.DataFrame, prior: pd.DataFrame | None = None,
                  oracle: pd.DataFrame | None = None, tilt_oracle: bool = False) -> dict:
    """:func:`combine` of in-memory frames: ``labels`` as from read_train, ``submission`` and
    ``oracle`` in sample_submission form, ``prior`` from :func:`fit_prior` (of OTHER labels);
    ``tilt_oracle`` scores :func:`weighted_optimum` of the oracle."""
    if oracle is not None and tilt_oracle:
        _check_values(oracle)
        oracle = weighted_optimum(oracle)
    return combine(score_frames(labels, submission),
                   None if prior is None else score_prior(labels, prior),
                   None if oracle is None else score_frames(labels, oracle))


def score_report(labels_csv, submission_csv, prior_from=None, oracle=None, pseudocount: float = PRIOR_PSEUDOCOUNT,
                 tilt_oracle: bool = False, notes: list | None = None) -> dict:
    """The model's official score with the prior (:func:`fit_prior` of the train.csv-format
    ``prior_from``, with ``pseudocount``) and the ceiling (the oracle submission file ``oracle``, scored
    as it is, or with ``tilt_oracle`` read as posteriors and scored as :func:`weighted_optimum` of them)
    beside it, as :func:`combine` returns.

    Bad input raises :class:`InputError` naming the file (and row): a missing or malformed file, an
    oracle lacking labelled rows, a prior file without the train.csv columns. A list passed as
    ``notes`` receives one-line caveats (labelled rows the prior gives probability 0).
    """
    model = score_files(labels_csv, submission_csv)  # reads and checks labels + submission first
    labels = read_train(labels_csv)
    prior_scores = None
    if prior_from is not None:
        prior = fit_prior(read_train(prior_from), pseudocount)
        prior_scores = score_prior(labels, prior)
        zero = zero_probability_rows(prior, labels)
        if zero and notes is not None:
            notes.append(f"{zero} labelled row(s) of {Path(labels_csv)} have a class the prior gives probability 0 "
                         f"(never seen in that cell of {Path(prior_from)}; ~36 nats each); the default "
                         f"pseudocount (CLI --prior-pseudocount {PRIOR_PSEUDOCOUNT}) avoids it")
    ceiling = None
    if oracle is not None:
        sub = read_sample_submission(oracle)
        try:
            if tilt_oracle:
                _check_values(sub)  # name a bad row before the tilt turns it into NaN
                sub = weighted_optimum(sub)
            ceiling = score_frames(labels, sub)
        except InputError as e:
            raise InputError(f"{Path(oracle)} (oracle): {e}") from None
    return combine(model, prior_scores, ceiling)


def zero_probability_rows(prior: pd.DataFrame, labels: pd.DataFrame) -> int:
    """How many labelled cells of ``labels`` (train.csv form) have a true class to which ``prior``
    gives probability exactly 0 (each costs -log(eps) ~ 36 nats in its group term)."""
    p = prior.set_index(["condition", "level"]).loc[list(CELLS), list(SUBMISSION_COLUMNS)].to_numpy(np.float64)
    codes = labels[list(LABEL_COLUMNS)].to_numpy(dtype=np.int64)
    valid = codes != BLANK
    cols = np.broadcast_to(np.arange(len(CELLS)), codes.shape)
    return int((p[cols[valid], codes[valid]] == 0).sum())
