"""Calibration that cannot hurt (lsdc.inference.calibrate): the guards against a small or lucky fold,
the any-severe scale, the prior mix, and the file's round trip."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from lsdc.core.schema import LEVELS, SAG_T1, SAG_T2, SPINAL
from lsdc.inference import calibrate as cal
from lsdc.train.report import view_score

FORAMEN = "left_neural_foraminal_narrowing"


def cells_of(labels: np.ndarray, p: np.ndarray, condition: str = SPINAL) -> pd.DataFrame:
    """One row per (study, level): labels (studies, 5) and probabilities (studies, 5, 3)."""
    s, lv = np.meshgrid(np.arange(len(labels)), np.arange(len(LEVELS)), indexing="ij")
    p = p.reshape(-1, 3)
    return pd.DataFrame({"study_id": 1000 + s.ravel(), "condition": condition,
                         "level": [LEVELS[i] for i in lv.ravel()], "label": labels.ravel(),
                         "p0": p[:, 0], "p1": p[:, 1], "p2": p[:, 2]})


def draw_labels(rng, studies: int) -> np.ndarray:
    return rng.choice(3, size=(studies, len(LEVELS)), p=[0.75, 0.17, 0.08])


def confident(labels: np.ndarray, rng, wrong: float, sure: float = 0.97) -> np.ndarray:
    """Probability ``sure`` on a predicted class: the label, or (with probability ``wrong``) another."""
    pred = labels.copy()
    flip = rng.random(labels.shape) < wrong
    pred[flip] = (labels[flip] + rng.integers(1, 3, int(flip.sum()))) % 3
    p = np.full(labels.shape + (3,), (1 - sure) / 2)
    np.put_along_axis(p, pred[..., None], sure, axis=-1)
    return p


def score(cells: pd.DataFrame, view: str = SAG_T2) -> float:
    return float(view_score(view, cells)["score"])


def test_a_perfect_looking_fold_cannot_make_an_imperfect_test_set_worse():
    """A 10-study validation fold the model got right (2 severe rows: too few to trust sharpening) and
    40 test studies where 15 % of the same confident predictions are wrong: the calibration fitted on
    the fold scores the test set no worse than the raw predictions (lower score = higher skill, the
    prior and ceiling being fixed), while the unguarded temperature the old search picked would have
    made it worse."""
    rng = np.random.default_rng(0)
    val_labels = draw_labels(rng, 10)
    val = cells_of(val_labels, confident(val_labels, rng, wrong=0.0))
    test_labels = draw_labels(rng, 40)
    test = cells_of(test_labels, confident(test_labels, rng, wrong=0.15))

    c = cal.fit_calibration(val, SAG_T2)
    assert (np.bincount(val_labels.ravel(), minlength=3) < cal.MIN_CLASS_ROWS).any()
    assert c["temperature"] >= 1.0 and not c["sharpening_allowed"]
    assert c["prior_weight"] >= cal.PRIOR_WEIGHT_MIN
    calibrated = cal.apply_calibration(test[list(cal.CELL_KEYS) + list(cal.PROBS)], c)
    calibrated["label"] = test["label"].to_numpy()
    assert score(calibrated) <= score(test)

    sharp = test.copy()  # what an unguarded fit of the perfect fold does: the sharpest temperature
    sharp[list(cal.PROBS)] = cal.apply_temperature(test[list(cal.PROBS)].to_numpy(), cal.T_RANGE[0])
    assert score(val.assign(**dict(zip(cal.PROBS, cal.apply_temperature(val[list(cal.PROBS)].to_numpy(),
                                                                        cal.T_RANGE[0]).T)))) < score(val)
    assert score(sharp) > score(test)


def test_the_fitted_calibration_is_never_worse_on_its_rows_than_the_prior_floor_costs():
    rng = np.random.default_rng(1)
    for wrong in (0.0, 0.1, 0.3):
        labels = draw_labels(rng, 60)
        cells = cells_of(labels, confident(labels, rng, wrong=wrong, sure=0.9))
        c = cal.fit_calibration(cells, SAG_T2)
        assert c["score_after"] <= c["score_before"] - math.log(1 - cal.PRIOR_WEIGHT_MIN) + 1e-9


def overconfident_foramina(rng, n: int, t: float):
    label = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), label] += 1.0
    p = cal.apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), t)
    return pd.DataFrame({"study_id": np.arange(n), "condition": FORAMEN, "level": "l4_l5", "label": label,
                         "p0": p[:, 0], "p1": p[:, 1], "p2": p[:, 2]})


def test_overconfident_predictions_are_softened_and_the_ranking_kept():
    pred = overconfident_foramina(np.random.default_rng(0), 300, 0.25)  # 4x overconfident
    c = cal.fit_calibration(pred, SAG_T1)
    assert c["temperature_fitted"] > 2 and c["temperature"] > 1.5 and c["score_after"] < c["score_before"] - 0.1
    p = pred[list(cal.PROBS)].to_numpy()
    assert np.allclose(cal.apply_calibration(pred, c)[list(cal.PROBS)].to_numpy().sum(1), 1)
    assert (np.argmax(cal.apply_temperature(p, c["temperature"]), 1) == np.argmax(p, 1)).all()


def test_sharpening_needs_enough_rows_of_every_class_and_is_shrunk_on_few():
    rng = np.random.default_rng(2)
    big = overconfident_foramina(rng, 600, 3.0)  # 3x underconfident, ~200 rows per class
    c = cal.fit_calibration(big, SAG_T1)
    assert c["sharpening_allowed"] and c["temperature"] < 0.8
    assert c["temperature_fitted"] <= c["temperature"] < 1.0  # shrunk towards 1, not past it
    small = overconfident_foramina(rng, 24, 3.0)  # ~8 rows per class
    s = cal.fit_calibration(small, SAG_T1)
    assert not s["sharpening_allowed"] and s["temperature"] >= 1.0


def numpy_scale(cells: pd.DataFrame, p: np.ndarray, s: float) -> np.ndarray:
    out = p.copy()
    for _, idx in cells[cells.condition == SPINAL].groupby("study_id").groups.items():
        i = max(idx, key=lambda k: p[k, 2])
        row = p[i] * np.array([1, 1, s])
        out[i] = row / row.sum()
    return out


def test_the_severe_scale_touches_only_each_studys_highest_spinal_row():
    rng = np.random.default_rng(3)
    labels = draw_labels(rng, 7)
    cells = pd.concat([cells_of(labels, rng.dirichlet([1, 1, 1], (7, 5))),
                       cells_of(labels, rng.dirichlet([1, 1, 1], (7, 5)), FORAMEN)], ignore_index=True)
    p = cells[list(cal.PROBS)].to_numpy()
    q = cal.scale_study_severe(cells, p, 1.6)
    np.testing.assert_allclose(q, numpy_scale(cells, p, 1.6))
    assert (np.abs(q - p).sum(1) > 0).sum() == 7  # one row per study, foramina untouched


def test_the_severe_scale_grows_where_the_study_max_is_underestimated_on_enough_studies():
    rng = np.random.default_rng(4)

    def study_set(n):
        labels = draw_labels(rng, n)
        p = np.where(labels[..., None] == np.arange(3), 0.6, 0.2)
        p[..., 2] *= 0.35  # every severe probability too low
        return cells_of(labels, p / p.sum(-1, keepdims=True))

    many = cal.fit_calibration(study_set(120), SAG_T2)
    assert many["severe_scale_fitted"] > 1 and 1 < many["severe_scale"] <= many["severe_scale_fitted"]
    few = cal.fit_calibration(study_set(8), SAG_T2)  # too few studies with and without a severe level
    assert few["severe_scale"] <= 1.0


def test_no_cell_is_ever_certain_after_calibration():
    rng = np.random.default_rng(5)
    labels = draw_labels(rng, 30)
    cells = cells_of(labels, np.where(labels[..., None] == np.arange(3), 1.0, 0.0))  # certain and right
    c = cal.fit_calibration(cells, SAG_T2)
    q = cal.apply_calibration(cells, c)[list(cal.PROBS)].to_numpy()
    prior = cal._prior_rows(cells, c["prior"])
    assert (q >= cal.PRIOR_WEIGHT_MIN * prior - 1e-12).all() and (q > 0).all()


def test_the_file_round_trips_and_an_old_temperature_only_file_is_refitted(tmp_path):
    rng = np.random.default_rng(6)
    pred = overconfident_foramina(rng, 200, 0.5)
    pred.to_csv(tmp_path / "oof.csv", index=False)
    (tmp_path / cal.CALIBRATION_FILE).write_text(json.dumps({"view": SAG_T1, "temperature": 0.5}))
    c = cal.load_or_fit(tmp_path)
    assert c["version"] == cal.CALIBRATION_VERSION and c["source"] == "oof.csv" and c["rows"] == 200
    assert json.loads((tmp_path / cal.CALIBRATION_FILE).read_text()) == c
    assert cal.load_or_fit(tmp_path) == c
    a = cal.apply_calibration(pred, c)
    b = cal.apply_calibration(pred, json.loads(json.dumps(c)))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("calibration", [None, {}])
def test_no_calibration_leaves_the_cells_alone(calibration):
    pred = overconfident_foramina(np.random.default_rng(7), 10, 1.0)
    pd.testing.assert_frame_equal(cal.apply_calibration(pred, calibration), pred)
