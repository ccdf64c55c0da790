"""`lsdc predict` end to end on synthetic test studies (one of them missing a series), calibration,
priors, and that `lsdc score` reads what predict writes.

Shares the session's synthetic dataset, train store (conftest's ``loc_dataset``) and few-epoch localiser
(``short_localizer``) with tests/test_localizer.py and tests/test_show.py; trains tiny classifiers (2 folds,
a few steps): this checks the plumbing, not accuracy.
"""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TEST_STUDIES

from lsdc.core.cli import main
from lsdc.core.overrides import load_config
from lsdc.core.readers import read_sample_submission, read_series_descriptions
from lsdc.core.schema import CONDITIONS, LEVELS, SAG_T1, SUBMISSION_COLUMNS, VIEWS
from lsdc.inference import calibrate as cal
from lsdc.inference.classify import label_prior
from lsdc.inference.predict import COORDS_FILE, predict
from lsdc.metric.official import score_files

TINY = ["--backbone=test_resnet", "--proj_dim=16", "--gru_hidden=8", "--gru_layers=1", "--attn_dim=8",
        "--level_emb_dim=4", "--batch_size=8", "--loader.backend=torch", "--loader.workers=0", "--folds=2",
        "--epochs=1", "--max_steps_per_epoch=3"]


@pytest.fixture(scope="session")
def trained(loc_dataset, short_localizer, tmp_path_factory):
    """The dataset, one tiny run per view (``--fold all``: 2 folds + oof.csv) and a short localiser."""
    from lsdc.train.loop import train_folds
    data, store = loc_dataset
    runs = tmp_path_factory.mktemp("predict_runs")
    cfg = load_config(None, TINY)
    out = []
    for view in VIEWS:
        train_folds(cfg, store, view, runs / view)
        out.append(runs / view)
    return data, out, short_localizer


@pytest.fixture(scope="session")
def test_data(trained, tmp_path_factory):
    """The test split with one study's Sagittal T1 series deleted (folder and CSV row)."""
    data, _, _ = trained
    out = tmp_path_factory.mktemp("predict_data")
    for name in ("test_series_descriptions.csv", "sample_submission.csv", "test_labels.csv",
                 "test_label_coordinates.csv"):
        shutil.copy(data / name, out / name)
    shutil.copytree(data / "test_images", out / "test_images")
    series = pd.read_csv(out / "test_series_descriptions.csv")
    victim = series[series.series_description == "Sagittal T1"].iloc[0]
    shutil.rmtree(out / "test_images" / str(victim.study_id) / str(victim.series_id))
    series.drop(index=victim.name).to_csv(out / "test_series_descriptions.csv", index=False)
    coords = pd.read_csv(out / "test_label_coordinates.csv")
    coords[coords.series_id != victim.series_id].to_csv(out / "test_label_coordinates.csv", index=False)
    return out, int(victim.study_id)


def check_submission(path: Path, data: Path) -> pd.DataFrame:
    sub = read_sample_submission(path)
    sample = read_sample_submission(data / "sample_submission.csv")
    assert set(sample.row_id) <= set(sub.row_id)
    assert sub.groupby("study_id").size().eq(len(CONDITIONS) * len(LEVELS)).all()
    p = sub[list(SUBMISSION_COLUMNS)].to_numpy()
    assert np.isfinite(p).all() and (p >= 0).all() and np.allclose(p.sum(1), 1, atol=1e-5)
    return sub


def test_predict_with_the_localizer_writes_a_valid_submission_and_warns_about_the_missing_series(
        trained, test_data, tmp_path):
    data, runs, loc = trained
    tdata, victim = test_data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = predict(tdata, runs, tmp_path / "submission.csv", localizer_dir=loc, work_dir=tmp_path / "work",
                    progress=False)
    check_submission(tmp_path / "submission.csv", tdata)
    assert s["studies"] == TEST_STUDIES and s["rows"] == 25 * TEST_STUDIES and s["localized"]
    assert any(f"study {victim}" in str(w.message) and SAG_T1 in str(w.message) for w in caught)
    assert s["prior_cells"] >= 10  # the victim's foraminal cells
    assert s["seconds_per_study_mean"] > 0 and s["seconds_per_study_median"] > 0
    coords = pd.read_csv(tmp_path / "work" / COORDS_FILE)
    assert list(coords.columns) == ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    assert {"Spinal Canal Stenosis", "Left Subarticular Stenosis", "Right Neural Foraminal Narrowing"} <= set(coords.condition)
    series = read_series_descriptions(tdata / "test_series_descriptions.csv")
    known = set(zip(series.study_id, series.series_id))
    assert all((a, b) in known for a, b in zip(coords.study_id, coords.series_id))
    assert not (coords.study_id.eq(victim) & coords.condition.str.contains("Foraminal")).any()
    res = score_files(tdata / "test_labels.csv", tmp_path / "submission.csv")
    assert np.isfinite(res["score"])


def test_predict_cli_with_known_coordinates_then_score_cli(trained, test_data, tmp_path, capsys):
    _, runs, _ = trained
    tdata, _ = test_data
    out = tmp_path / "sub.csv"
    rc = main(["predict", str(tdata), "--runs", *map(str, runs), "--out", str(out), "--coords",
               str(tdata / "test_label_coordinates.csv"), "--no-progress", "--tta=false"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "per study: mean" in text and "median" in text
    check_submission(out, tdata)
    assert main(["score", str(tdata / "test_labels.csv"), str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res) == {"score", "spinal", "foraminal", "subarticular", "any_severe"}


def test_calibration_file_is_written_and_never_worse_on_the_oof_rows(trained):
    _, runs, _ = trained
    for run in runs:
        c = json.loads((run / cal.CALIBRATION_FILE).read_text())  # written by predict (calibrate on)
        assert c["score_after"] <= c["score_before"] + 1e-12 and c["temperature"] > 0


def test_temperature_fit_softens_overconfident_predictions():
    rng = np.random.default_rng(0)
    n = 300
    label = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), label] += 1.0
    p = cal.apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 0.25)  # 4x overconfident
    pred = pd.DataFrame({"study_id": np.arange(n), "condition": "left_neural_foraminal_narrowing",
                         "level": "l4_l5", "label": label, "p0": p[:, 0], "p1": p[:, 1], "p2": p[:, 2]})
    fit = cal.fit_temperature(pred, SAG_T1)
    assert fit["temperature"] > 2 and fit["score_after"] < fit["score_before"] - 0.1
    q = cal.apply_temperature(p, fit["temperature"])
    assert np.allclose(q.sum(1), 1) and (np.argmax(q, 1) == np.argmax(p, 1)).all()


def test_label_prior_is_a_smoothed_frequency():
    pred = pd.DataFrame({"condition": ["spinal_canal_stenosis"] * 4, "level": ["l4_l5"] * 4, "label": [0, 0, 2, -1]})
    prior = label_prior(pred, ["spinal_canal_stenosis"])
    assert np.allclose(prior[("spinal_canal_stenosis", "l4_l5")], [3 / 6, 1 / 6, 2 / 6])
    assert np.allclose(prior[("spinal_canal_stenosis", "l1_l2")], 1 / 3)
