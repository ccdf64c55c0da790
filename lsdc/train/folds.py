"""Cross-validation folds: StratifiedGroupKFold over a view's samples, grouped by study.

Every sample of a study (all its levels and sides) lands in the same fold, so no study is seen in
training and validation at once. Folds are stratified by the sample label (blank, -1, counts as its
own stratum) and seeded by ``train.seed``; they are a pure function of (index, n_folds, seed), so
every fold of a run, a resumed run and the OOF assembly see the same split.

Folds are drawn per view (each view's index has its own labels), so one study can sit in different
folds on different views; OOF predictions of one view are still out-of-fold for that view.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from ..core.errors import InputError


def assign_folds(index: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) of every row of ``index`` (needs study_id and label columns)."""
    studies = index["study_id"].nunique()
    if studies < n_folds:
        raise InputError(f"{studies} studies cannot make {n_folds} folds (train.folds); use fewer folds")
    folds = np.full(len(index), -1, dtype=np.int64)
    skf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    y = index["label"].to_numpy(dtype=np.int64)
    groups = index["study_id"].to_numpy(dtype=np.int64)
    for k, (_, val) in enumerate(skf.split(np.zeros(len(index)), y, groups)):
        folds[val] = k
    assert (folds >= 0).all()
    return folds


def split_rows(index: pd.DataFrame, n_folds: int, seed: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train row ids, validation row ids) of ``fold``: positions in ``index`` (= store rows)."""
    if not 0 <= fold < n_folds:
        raise InputError(f"fold {fold} is out of range for train.folds={n_folds} (0..{n_folds - 1})")
    folds = assign_folds(index, n_folds, seed)
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
