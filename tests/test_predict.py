"""`lsdc predict` end to end on synthetic test studies (one of them missing a series), calibration,
priors, and that `lsdc score` reads what predict writes.

Shares the session's synthetic dataset, train store (conftest's ``loc_dataset``) and few-epoch localiser
(``short_localizer``) with tests/test_localizer.py and tests/test_show.py; trains tiny classifiers (2 folds,
a few steps): this checks the plumbing, not accuracy.
"""
import json
import math
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
from lsdc.core.config import Config
from lsdc.core.schema import CONDITIONS, LEVELS, SAG_T1, SAG_T2, SPINAL, SUBMISSION_COLUMNS, VIEW_CONDITIONS, VIEWS
from lsdc.inference import calibrate as cal
from lsdc.inference.classify import Run, training_prior
from lsdc.inference.predict import COORDS_FILE, predict
from lsdc.metric.baselines import fit_prior
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


def check_fallback_is_the_prior(sub: pd.DataFrame, victim: int, runs: list) -> None:
    """The victim's Sagittal T1 cells (its series is gone: nothing predicted them) hold fit_prior's rows,
    fitted on the labels of the Sagittal T1 run's out-of-fold predictions."""
    run = next(r for r in runs if r.name == SAG_T1)
    prior = fit_prior(pd.read_csv(run / "oof.csv")).set_index(["condition", "level"])
    got = sub[sub.study_id.eq(victim) & sub.condition.isin(VIEW_CONDITIONS[SAG_T1])]
    assert len(got) == len(VIEW_CONDITIONS[SAG_T1]) * len(LEVELS)
    expected = prior.loc[list(zip(got.condition, got.level)), list(SUBMISSION_COLUMNS)].to_numpy()
    np.testing.assert_allclose(got[list(SUBMISSION_COLUMNS)].to_numpy(), expected, rtol=1e-12)


def test_predict_with_the_localizer_writes_a_valid_submission_and_warns_about_the_missing_series(
        trained, test_data, tmp_path):
    data, runs, loc = trained
    tdata, victim = test_data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = predict(tdata, runs, tmp_path / "submission.csv", localizer_dir=loc, work_dir=tmp_path / "work",
                    progress=False)
    sub = check_submission(tmp_path / "submission.csv", tdata)
    check_fallback_is_the_prior(sub, victim, runs)
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
    tdata, victim = test_data
    out = tmp_path / "sub.csv"
    rc = main(["predict", str(tdata), "--runs", *map(str, runs), "--out", str(out), "--coords",
               str(tdata / "test_label_coordinates.csv"), "--no-progress", "--tta=false"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "per study: mean" in text and "median" in text
    check_fallback_is_the_prior(check_submission(out, tdata), victim, runs)
    assert main(["score", str(tdata / "test_labels.csv"), str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res) == {"score", "spinal", "foraminal", "subarticular", "any_severe"}


def test_calibration_file_is_written_and_never_worse_on_the_oof_rows(trained):
    _, runs, _ = trained
    for run in runs:
        c = json.loads((run / cal.CALIBRATION_FILE).read_text())  # written by predict (calibrate on)
        assert c["version"] == cal.CALIBRATION_VERSION and c["temperature"] > 0 and c["prior_weight"] > 0
        assert c["score_after"] <= c["score_before"] - math.log(1 - cal.PRIOR_WEIGHT_MIN) + 1e-9


def test_training_prior_pools_the_runs_labels_counting_a_cell_once():
    """Two runs of the spinal view over the same study (its label in both) and a third over another:
    the prior is fit_prior's of the distinct (study, cell) labels; a condition no run predicts is uniform."""
    def run(labels):
        frame = pd.DataFrame(labels, columns=["study_id", "condition", "level", "label"])
        return Run(Path("run"), SAG_T2, Config(), [], labels=frame)
    a = run([(1, SPINAL, "l4_l5", 2), (2, SPINAL, "l4_l5", 0), (2, SPINAL, "l5_s1", -1)])
    b = run([(1, SPINAL, "l4_l5", 2)])
    c = run([(3, SPINAL, "l4_l5", 0)])
    no_labels = Run(Path("empty"), SAG_T1, Config(), [])
    prior = training_prior([a, b, c, no_labels])
    distinct = pd.DataFrame([(1, SPINAL, "l4_l5", 2), (2, SPINAL, "l4_l5", 0), (3, SPINAL, "l4_l5", 0)],
                            columns=["study_id", "condition", "level", "label"])
    pd.testing.assert_frame_equal(prior, fit_prior(distinct))
    cell = prior.set_index(["condition", "level"]).loc[(SPINAL, "l4_l5")]
    assert cell["labelled"] == 3 and cell["severe"] > cell["moderate"]  # 2 Normal + 1 Severe, weights 1/2/4
    assert (prior[prior.condition.isin(VIEW_CONDITIONS[SAG_T1])]["source"] == "uniform").all()
    assert (training_prior([])["source"] == "uniform").all()
