"""The official metric: hand-computed cases, agreement with sklearn, validation errors and the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from lsdc.core.cli import main
from lsdc.core.errors import InputError
from lsdc.core.readers import read_sample_submission
from lsdc.core.schema import (BLANK, CONDITIONS, GROUPS, LABEL_COLUMNS, LEVELS, SEVERITIES, SEVERITY_WEIGHTS, SPINAL,
                              SUBMISSION_COLUMNS, label_column, row_id)
from lsdc.metric.official import predictions_to_submission, score_files, score_frames

KEYS = {"score", "spinal", "foraminal", "subarticular", "any_severe"}


# --- builders -------------------------------------------------------------------------------------
def make_labels(codes: dict[int, dict[str, int]], default: int = 0) -> pd.DataFrame:
    """study_id -> {label column: code}; unspecified cells get ``default`` (as read_train returns)."""
    rows = [{"study_id": s, **{c: cells.get(c, default) for c in LABEL_COLUMNS}} for s, cells in codes.items()]
    return pd.DataFrame(rows, columns=["study_id", *LABEL_COLUMNS])


def make_submission(study_ids, default=(0.8, 0.1, 0.1), overrides=None) -> pd.DataFrame:
    """All 25 rows per study at ``default``; ``overrides`` maps row_id -> (p0, p1, p2)."""
    overrides = overrides or {}
    rows = []
    for s in study_ids:
        for c in CONDITIONS:
            for lv in LEVELS:
                rid = row_id(s, c, lv)
                rows.append((rid, *overrides.get(rid, default)))
    return pd.DataFrame(rows, columns=["row_id", *SUBMISSION_COLUMNS])


def write_train_csv(labels: pd.DataFrame, path) -> None:
    text = labels.copy()
    for c in LABEL_COLUMNS:
        text[c] = [SEVERITIES[v] if v != BLANK else "" for v in labels[c]]
    text.to_csv(path, index=False)


def random_case(seed: int, n_studies: int = 40):
    """Random labels (with blanks, skewed to Normal) and random, unnormalised predictions."""
    rng = np.random.default_rng(seed)
    codes = rng.choice([BLANK, 0, 1, 2], p=[0.05, 0.6, 0.22, 0.13], size=(n_studies, len(LABEL_COLUMNS)))
    labels = pd.DataFrame(codes, columns=list(LABEL_COLUMNS))
    labels.insert(0, "study_id", rng.choice(10**8, size=n_studies, replace=False))
    sub = make_submission(labels["study_id"])
    p = rng.dirichlet([0.7, 0.7, 0.7], size=len(sub)) * rng.uniform(0.2, 1.0, size=(len(sub), 1))
    sub[list(SUBMISSION_COLUMNS)] = p
    return labels, sub


def sklearn_reference(labels: pd.DataFrame, sub: pd.DataFrame) -> dict:
    """Independent long-format implementation in the Kaggle scorer's style, on sklearn's log_loss."""
    long = labels.melt(id_vars="study_id", var_name="col", value_name="y")
    cell = {label_column(c, lv): (c, lv) for c in CONDITIONS for lv in LEVELS}
    long["condition"] = [cell[c][0] for c in long["col"]]
    long["row_id"] = [row_id(s, *cell[c]) for s, c in zip(long["study_id"], long["col"])]
    long = long[long["y"] != BLANK].merge(sub, on="row_id")
    long["w"] = np.asarray(SEVERITY_WEIGHTS)[long["y"]]
    out = {}
    for group, conds in GROUPS.items():
        g = long[long["condition"].isin(conds)]
        p = g[list(SUBMISSION_COLUMNS)].to_numpy()
        out[group] = log_loss(g["y"], p / p.sum(axis=1, keepdims=True), sample_weight=g["w"], labels=[0, 1, 2])
    sp = long[long["condition"] == SPINAL].groupby("study_id")
    y = (sp["y"].max() == 2).astype(int)
    out["any_severe"] = log_loss(y, sp["severe"].max(), sample_weight=sp["w"].max(), labels=[0, 1])
    out["score"] = np.mean([out[k] for k in ("spinal", "foraminal", "subarticular", "any_severe")])
    return out


# --- hand-computed cases ----------------------------------------------------------------------------
def test_one_normal_study_by_hand():
    result = score_frames(make_labels({7: {}}), make_submission([7]))
    assert set(result) == KEYS
    for g in GROUPS:
        assert result[g] == pytest.approx(-math.log(0.8), rel=1e-12)
    assert result["any_severe"] == pytest.approx(-math.log(0.9), rel=1e-12)
    assert result["score"] == pytest.approx((3 * -math.log(0.8) - math.log(0.9)) / 4, rel=1e-12)


def test_severe_spinal_level_by_hand():
    col = lambda lv: label_column(SPINAL, lv)  # noqa: E731
    labels = make_labels({1: {col("l4_l5"): 2}, 2: {col("l5_s1"): 1}})
    sub = make_submission([1, 2], overrides={
        row_id(1, SPINAL, "l4_l5"): (0.2, 0.2, 0.6),
        row_id(1, SPINAL, "l1_l2"): (0.1, 0.1, 0.8),  # a Normal level holds the study's max severe
        row_id(2, SPINAL, "l5_s1"): (0.3, 0.4, 0.3),
    })
    # spinal rows: study 1 -> 3 normal at 0.8, l1_l2 normal at 0.1, l4_l5 severe at 0.6 (w 4);
    #              study 2 -> 4 normal at 0.8, l5_s1 moderate at 0.4 (w 2)
    num = 7 * -math.log(0.8) - math.log(0.1) + 4 * -math.log(0.6) + 2 * -math.log(0.4)
    spinal = num / (8 * 1 + 4 + 2)
    # any_severe: study 1 label 1, pred max(0.1, 0.8, 0.6) = 0.8, w 4; study 2 label 0, pred 0.3, w 2
    any_severe = (4 * -math.log(0.8) + 2 * -math.log(1 - 0.3)) / 6
    result = score_frames(labels, sub)
    assert result["spinal"] == pytest.approx(spinal, rel=1e-12)
    assert result["any_severe"] == pytest.approx(any_severe, rel=1e-12)
    assert result["foraminal"] == pytest.approx(-math.log(0.8), rel=1e-12)
    assert result["score"] == pytest.approx((spinal + 2 * -math.log(0.8) + any_severe) / 4, rel=1e-12)


def test_group_rows_renormalised_but_any_severe_raw():
    result = score_frames(make_labels({3: {}}), make_submission([3], default=(0.4, 0.05, 0.05)))
    for g in GROUPS:
        assert result[g] == pytest.approx(-math.log(0.8), rel=1e-12)
    assert result["any_severe"] == pytest.approx(-math.log(1 - 0.05), rel=1e-12)


def test_uniform_submission_gives_log3_per_group():
    labels, sub = random_case(seed=11, n_studies=60)
    sub[list(SUBMISSION_COLUMNS)] = 1 / 3
    result = score_frames(labels, sub)
    for g in GROUPS:
        assert result[g] == pytest.approx(math.log(3), rel=1e-12)
    spinal = labels[[label_column(SPINAL, lv) for lv in LEVELS]].to_numpy()
    valid = spinal != BLANK
    keep = valid.any(axis=1)
    y = (spinal == 2).any(axis=1)[keep]
    w = np.where(valid, np.asarray(SEVERITY_WEIGHTS)[np.where(valid, spinal, 0)], 0).max(axis=1)[keep]
    expected = (w[y].sum() * math.log(3) + w[~y].sum() * math.log(1.5)) / w.sum()
    assert result["any_severe"] == pytest.approx(expected, rel=1e-12)


def test_clipping_matches_sklearn_eps():
    # a zero probability on the true class is clipped to float64 eps, not 1e-15
    result = score_frames(make_labels({5: {}}), make_submission([5], default=(0.0, 0.5, 0.5)))
    assert result["spinal"] == pytest.approx(-math.log(np.finfo(float).eps), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_log_loss(seed):
    labels, sub = random_case(seed)
    result, expected = score_frames(labels, sub), sklearn_reference(labels, sub)
    for key in KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-10), key


def test_blank_labels_not_scored():
    blank = label_column(SPINAL, "l2_l3")
    labels = make_labels({4: {blank: BLANK}})
    rid = row_id(4, SPINAL, "l2_l3")
    good = score_frames(labels, make_submission([4]))
    terrible = score_frames(labels, make_submission([4], overrides={rid: (0.0, 0.0, 1.0)}))
    without_row = make_submission([4])
    without_row = without_row[without_row["row_id"] != rid]
    assert good == terrible == score_frames(labels, without_row)  # incl. any_severe (raw severe 1.0 ignored)
    assert good["spinal"] == pytest.approx(-math.log(0.8), rel=1e-12)


def test_all_blank_spinal_study_left_out_of_any_severe():
    spinal = {label_column(SPINAL, lv): BLANK for lv in LEVELS}
    labels = make_labels({1: spinal, 2: {label_column(SPINAL, "l1_l2"): 2}})
    result = score_frames(labels, make_submission([1, 2]))
    assert result["any_severe"] == pytest.approx(-math.log(0.1), rel=1e-12)


# --- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda s, r: s[s["row_id"] != r], "missing"),
    (lambda s, r: pd.concat([s, make_submission([99]).iloc[[0]]]), row_id(99, CONDITIONS[0], LEVELS[0])),
    (lambda s, r: s.assign(moderate=np.where(s["row_id"] == r, np.nan, s["moderate"])), "NaN"),
    (lambda s, r: s.assign(severe=np.where(s["row_id"] == r, -0.1, s["severe"])), "negative"),
    (lambda s, r: s.assign(severe=np.where(s["row_id"] == r, 1.5, s["severe"])), "greater than 1"),
    (lambda s, r: s.assign(**{c: np.where(s["row_id"] == r, 0.0, s[c]) for c in SUBMISSION_COLUMNS}), "summing to 0"),
    (lambda s, r: pd.concat([s, s[s["row_id"] == r]]), "duplicate"),
])
def test_bad_submission_raises_input_error_naming_row(edit, message):
    labels = make_labels({8: {}, 9: {}})
    rid = row_id(9, CONDITIONS[2], LEVELS[3])
    sub = edit(make_submission([8, 9]), rid)
    with pytest.raises(InputError) as info:
        score_frames(labels, sub)
    text = str(info.value)
    assert message in text
    if "99" not in message:
        assert rid in text


def test_predictions_to_submission_round_trip(tmp_path):
    rows = [(s, c, lv, 2.0, 1.0, 1.0) for s in (20, 3) for c in CONDITIONS for lv in LEVELS]
    sub = predictions_to_submission(rows)
    assert list(sub.columns) == ["row_id", *SUBMISSION_COLUMNS]
    assert list(sub["row_id"]) == sorted(sub["row_id"])
    np.testing.assert_allclose(sub[list(SUBMISSION_COLUMNS)].sum(axis=1), 1.0)
    sub.to_csv(tmp_path / "submission.csv", index=False)
    back = read_sample_submission(tmp_path / "submission.csv")
    result = score_frames(make_labels({3: {}, 20: {}}), back)
    assert result["spinal"] == pytest.approx(-math.log(0.5), rel=1e-12)
    with pytest.raises(ValueError):
        predictions_to_submission([(1, SPINAL, "l1_l2", 0.0, 0.0, 0.0)])


# --- files and CLI -------------------------------------------------------------------------------
@pytest.fixture
def kaggle_files(tmp_path):
    labels, sub = random_case(seed=3, n_studies=12)
    write_train_csv(labels, tmp_path / "train.csv")
    sub.to_csv(tmp_path / "submission.csv", index=False)
    return labels, sub, tmp_path


def test_score_files_matches_frames(kaggle_files):
    labels, sub, d = kaggle_files
    result = score_files(d / "train.csv", d / "submission.csv")
    assert result == pytest.approx(score_frames(labels, sub), rel=1e-12)


def test_cli_json(kaggle_files, capsys):
    labels, sub, d = kaggle_files
    assert main(["score", str(d / "train.csv"), str(d / "submission.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == KEYS
    assert out == pytest.approx(score_frames(labels, sub), rel=1e-12)


def test_cli_table(kaggle_files, capsys):
    _, _, d = kaggle_files
    assert main(["score", str(d / "train.csv"), str(d / "submission.csv")]) == 0
    out = capsys.readouterr().out
    for key in KEYS:
        assert key in out


def test_cli_bad_submission_path_exits_2(kaggle_files, capsys):
    _, _, d = kaggle_files
    assert main(["score", str(d / "train.csv"), str(d / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "nope.csv" in err


def test_cli_blank_probability_names_row(kaggle_files, capsys):
    _, sub, d = kaggle_files
    sub.loc[5, "moderate"] = np.nan  # written as an empty cell
    sub.to_csv(d / "submission.csv", index=False)
    assert main(["score", str(d / "train.csv"), str(d / "submission.csv"), "--json"]) == 2
    err = capsys.readouterr().err
    assert sub.loc[5, "row_id"] in err and len(err.strip().splitlines()) == 1
