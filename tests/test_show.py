"""`lsdc show`: the sample montage of a store and the keypoint panels of a study folder are PNGs of the
promised size with real image content; user mistakes are one error line and exit 2.

The session's localiser dataset (conftest's ``loc_dataset``: 32 px crops, 64 px volumes) + store and its
2-epoch localiser (``short_localizer``), shared with tests/test_localizer.py and tests/test_predict.py.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from lsdc.core.cli import main
from lsdc.core.schema import LEFT_NFN, RIGHT_NFN, SAG_T1, SAG_T2, SPINAL
from lsdc.show import montage
from lsdc.show.cli import KEYPOINT_COLORS, sample_caption, select_samples, show_store, show_study
from lsdc.store.reader import read_index

LSDC = Path(sys.executable).with_name("lsdc")


@pytest.fixture(scope="module")
def dataset(loc_dataset):
    return loc_dataset


@pytest.fixture(scope="module")
def localizer(short_localizer):
    return short_localizer


def _png(path) -> np.ndarray:
    img = imread(path)
    return (img[..., :3] * 255).round().astype(np.uint8) if img.dtype != np.uint8 else img[..., :3]


def _varied(region: np.ndarray) -> bool:
    return region.size > 0 and float(region.astype(float).std()) > 2.0


def test_sample_montage_has_the_promised_size_and_every_panel_shows_image(dataset, tmp_path):
    _, store = dataset
    out = tmp_path / "m.png"
    s = show_store(store, SAG_T2, out, n=5, cols=4)
    # tile: 192 px centre + 4 px + two columns of 3 thumbnails (64 px) = 324 wide, 192 + 3 + 2 x 15 = 225 tall;
    # grid: 4 columns, 2 rows, 8 px gaps, a 24 px header
    assert s["neighbours"] == 3 and montage.sample_tile_size(3) == (324, 225)
    assert s["size"] == (4 * 324 + 5 * 8, 24 + 2 * 225 + 3 * 8) == (1336, 498)
    img = _png(out)
    assert img.shape[:2] == (498, 1336)
    tile = montage.sample_tile_size(3)
    for i in range(5):
        x, y = montage._origin(i, tile, 4)
        assert _varied(img[y:y + 192, x:x + 192]), f"centre of sample {i} is blank"
        for row in range(3):
            for col in range(2):
                tx, ty = x + 196 + col * 64, y + row * 64
                assert _varied(img[ty + 4:ty + 60, tx + 4:tx + 60]), f"thumbnail {row},{col} of sample {i} is blank"
    x, y = montage._origin(5, tile, 4)  # the empty 6th cell stays background
    assert not _varied(img[y:y + 192, x:x + 192])


@pytest.mark.parametrize("neighbours,tile", [(0, (192, 225)), (1, (192 + 4 + 384, 225)), (5, (192 + 4 + 76, 225))])
def test_tile_size_follows_the_number_of_neighbours(neighbours, tile):
    stacks = [np.random.default_rng(i).integers(0, 255, (11, 20, 20), dtype=np.uint8) for i in range(3)]
    c = montage.sample_montage(stacks, [["a", "b"]] * 3, neighbours, cols=2, title="t")
    assert montage.sample_tile_size(neighbours) == tile
    assert c.size == montage.grid_size(3, tile, 2) == (2 * tile[0] + 3 * 8, 24 + 2 * tile[1] + 3 * 8)


def test_study_selection_shows_all_its_samples_by_level_and_side(dataset, tmp_path):
    _, store = dataset
    index = read_index(store, SAG_T1)
    counts = index.groupby("study_id", sort=False).size()
    study = int(counts.index[counts == 10][0])  # the first study with every foraminal sample (5 levels x 2 sides)
    rows = select_samples(index, study)
    assert len(rows) == (index.study_id == study).sum() == 10
    sub = index.iloc[rows]
    assert list(zip(sub.level_idx, sub.side_idx)) == sorted(zip(sub.level_idx, sub.side_idx))
    s = show_store(store, SAG_T1, tmp_path / "s.png", study=str(study), cols=5)
    assert s["samples"] == 10 and _png(tmp_path / "s.png").shape[:2] == s["size"][::-1]
    assert len(select_samples(index, study, n=3)) == 3


def test_random_order_is_fixed_by_the_seed(dataset):
    _, store = dataset
    index = read_index(store, SAG_T1)
    a, b, c = (select_samples(index, None, 12, seed) for seed in (0, 0, 1))
    assert list(a) == list(b) and list(a) != list(c) and len(set(a)) == 12
    assert len(select_samples(index, None, None, 0)) == 12  # the default N


def test_caption_names_study_level_side_severity_and_stack():
    row = {"study_id": 7, "series_id": 8, "level": "l4_l5", "side": "left", "label": 1, "instance_number": 3, "stack": 2}
    lines, color = sample_caption(row)
    assert lines == ["study 7 · series 8 · stack 2", "L4/L5 left · Moderate · inst 3"]
    no_stack = {k: v for k, v in row.items() if k != "stack"}
    assert "stack ?" in sample_caption({**no_stack, "label": -1})[0][0]
    assert "unlabelled" in sample_caption({**no_stack, "label": -1})[0][1]
    assert "Severe" in sample_caption({**row, "label": 2})[0][1] and "Normal/Mild" in sample_caption({**row, "label": 0})[0][1]


def test_installed_entry_point_writes_the_montage(dataset, tmp_path):
    _, store = dataset
    out = tmp_path / "sub" / "axial.png"
    r = subprocess.run([str(LSDC), "show", str(store), "--view", "axial_t2", "--n", "3", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and _png(out).shape[:2] == (24 + 225 + 2 * 8, 3 * 324 + 4 * 8)


def test_user_mistake_from_the_entry_point_is_one_line_exit_2(dataset, tmp_path):
    _, store = dataset
    r = subprocess.run([str(LSDC), "show", str(store), "--view", "coronal", "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "'coronal'" in err[0] and err[0].startswith("lsdc show: error:")


@pytest.mark.parametrize("args,named", [
    (["{missing}", "--view", "sagittal_t2"], "no_store"),
    (["{store}", "--view", "sagittal_t2", "--study", "123"], "123"),
    (["{store}", "--view", "sagittal_t2", "--study", "abc"], "abc"),
    (["{store}", "--view", "Sagittal T2"], "Sagittal T2"),
    (["{store}", "--view", "axial_t2", "--n", "0"], "'0'"),
    (["{store}", "--view", "axial_t2", "--n", "many"], "many"),
    (["{store}", "--view", "axial_t2", "--neighbours", "9"], "'9'"),
    (["{store}"], "--view"),
    ([], "STORE"),
    (["--study-dir", "{missing}", "--keypoints", "k.csv"], "no_store"),
    (["--study-dir", "{study_dir}"], "--localizer"),
    (["--study-dir", "{study_dir}", "--localizer", "{missing}"], "no_store"),
    (["--study-dir", "{study_dir}", "--keypoints", "{missing}"], "no_store"),
])
def test_user_mistakes_are_one_error_line_and_exit_2(dataset, tmp_path, capsys, args, named):
    data, store = dataset
    study_dir = next(p for p in sorted((data / "train_images").iterdir()))
    fill = {"missing": str(tmp_path / "no_store"), "store": str(store), "study_dir": str(study_dir)}
    rc = main(["show", *[a.format(**fill) for a in args], "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("lsdc show: error:"), err
    assert named in err[0], err[0]
    assert not (tmp_path / "x.png").exists()


def _label_keypoints(data: Path, store: Path, study: int) -> pd.DataFrame:
    """The study's labelled sagittal points as a keypoints.csv (what `lsdc predict --work` writes)."""
    rows = []
    for view in (SAG_T2, SAG_T1):
        ix = read_index(store, view)
        for r in ix[ix.study_id == study].itertuples(index=False):
            rows.append({"study_id": study, "series_id": r.series_id, "view": view, "condition": r.condition,
                         "level": r.level, "slice_index": r.slice_index, "instance_number": r.instance_number,
                         "x": r.x_px, "y": r.y_px, "confidence": 0.9})
    return pd.DataFrame(rows)


def test_keypoint_panels_draw_given_keypoints_on_their_slices(dataset, tmp_path):
    data, store = dataset
    t2, t1 = (read_index(store, v).groupby("study_id", sort=False).size() for v in (SAG_T2, SAG_T1))
    study = int(next(s for s in t2.index if t2[s] == 5 and t1.get(s) == 10))  # the first with all 15 sagittal points
    kp = _label_keypoints(data, store, study)
    kp.to_csv(tmp_path / "keypoints.csv", index=False)
    out = tmp_path / "kp.png"
    s = show_study(data / "train_images" / str(study), out, keypoints=tmp_path / "keypoints.csv", cols=3)
    n_panels = kp.groupby(["series_id", "instance_number"]).ngroups
    assert s["keypoints"] == 15 and s["panels"] == n_panels
    # panel: 360 px square + 3 + 2 x 15 px caption; 3 columns, 8 px gaps, 24 px header
    assert s["size"] == montage.grid_size(n_panels, (360, 393), 3)
    img = _png(out)
    assert img.shape[:2] == s["size"][::-1]
    tile = montage.panel_tile_size()
    for i in range(n_panels):
        x, y = montage._origin(i, tile, 3)
        assert _varied(img[y:y + 360, x:x + 360]), f"panel {i} is blank"
    for cond in (SPINAL, LEFT_NFN, RIGHT_NFN):  # every kind of keypoint left its ring
        hits = np.all(np.abs(img.astype(int) - KEYPOINT_COLORS[cond]) <= 2, axis=-1).sum()
        assert hits >= 20, (cond, hits)


def test_localizer_mode_runs_the_predict_localiser_on_one_study(dataset, localizer, tmp_path, capsys):
    data, _ = dataset
    study_dir = sorted((data / "train_images").iterdir())[1]
    out = tmp_path / "loc.png"
    rc = main(["show", "--study-dir", str(study_dir), "--localizer", str(localizer), "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert "15 keypoints" in capsys.readouterr().out  # 5 canal points (T2) + 10 foramina (T1)
    s = show_study(study_dir, tmp_path / "again.png", localizer=localizer, cols=2)
    img = _png(tmp_path / "again.png")
    assert s["keypoints"] == 15 and img.shape[:2] == montage.grid_size(s["panels"], (360, 393), 2)[::-1]
    assert _png(out).shape[:2] == montage.grid_size(s["panels"], (360, 393), 3)[::-1]
    for i in range(s["panels"]):
        x, y = montage._origin(i, montage.panel_tile_size(), 2)
        assert _varied(img[y:y + 360, x:x + 360])
