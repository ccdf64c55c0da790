"""`lsdc show`: the sample montage of a store and the keypoint panels of a study folder are PNGs of the
promised size with real image content; ``--augment`` shows what the real training augmentation draws
(identity ranges give the eval crop, a slice shift moves the window, the mark follows the warp); user
mistakes are one error line and exit 2.

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
from lsdc.core.config import CropSpec, LoaderConfig
from lsdc.core.overrides import load_config
from lsdc.core.schema import LEFT_NFN, RIGHT_NFN, SAG_T1, SAG_T2, SPINAL
from lsdc.loaders.augment import draw_params
from lsdc.show import montage
from lsdc.show.cli import (KEYPOINT_COLORS, augment_samples, centre_marks, grey_images, sample_caption, select_samples,
                           show_store, show_study)
from lsdc.store.reader import crop_spec, crops_array, read_index

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
    (["{store}", "--view", "sagittal_t1", "--augment", "--draws", "0"], "'0'"),
    (["{store}", "--view", "sagittal_t1", "--augment", "--draws", "9"], "'9'"),
    (["{store}", "--view", "sagittal_t1", "--augment", "--draws", "few"], "few"),
    (["{store}", "--view", "sagittal_t1", "--augment", "--n", "101"], "'101'"),
    (["{store}", "--view", "sagittal_t1", "--augment", "--neighbours", "4"], "'4'"),  # 7 slices: at most 3
    (["{store}", "--view", "sagittal_t1", "--augment", "--cols", "2"], "--cols"),
    (["{store}", "--view", "sagittal_t1", "--augment", "--max_slice_shift=3"], "max_slice_shift"),
    (["{store}", "--view", "sagittal_t1", "--augment", "--max_slice_shift=3",  # the config allows 3, the store not
      *(f"--preprocess.{v}.slice_margin=3" for v in ("sagittal_t2", "sagittal_t1", "axial_t2"))],
     "stored slice_margin 2"),
    (["{store}", "--view", "sagittal_t1", "--augment", "--rotate_deg=-1"], "rotate_deg"),
    (["{store}", "--view", "sagittal_t1", "--augment", "--no_such_key=1"], "no_such_key"),
    (["{store}", "--view", "sagittal_t1", "--augment", "--config", "{missing}"], "no_store"),
    (["{store}", "--view", "sagittal_t1", "--draws", "2"], "--augment"),
    (["{store}", "--view", "sagittal_t1", "--rotate_deg=5"], "--augment"),
    (["--study-dir", "{study_dir}", "--keypoints", "k.csv", "--augment"], "--augment"),
    (["--study-dir", "{study_dir}", "--keypoints", "k.csv", "--rotate_deg=5"], "--rotate_deg=5"),
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


# -- --augment -------------------------------------------------------------------------------------
#: every augmentation range zero: the draws must be the eval crop
ZERO = ["--max_slice_shift=0", "--rotate_deg=0", "--scale_range=0", "--translate_frac=0", "--brightness=0",
        "--contrast=0", "--gamma=0", "--noise_std=0"]


def _without(*keys) -> list[str]:
    return [o for o in ZERO if o.split("=")[0][2:] not in keys]


def _stored(store, view, rows) -> np.ndarray:
    """The rows' whole stored stacks, uint8 [n, S_store, P, P], read by zarr (not by the loader)."""
    arr = crops_array(store, view)
    return np.stack([arr[int(r)] for r in rows])


def _crop(stacks: np.ndarray, spec) -> np.ndarray:
    m = (spec.store_px - spec.out_px) // 2
    return stacks[..., m:m + spec.out_px, m:m + spec.out_px]


def _rows(store, view, n=4):
    return select_samples(read_index(store, view), None, n, 0)


def test_augment_montage_has_one_row_per_sample_and_marks_where_the_warp_puts_the_point(dataset, tmp_path, capsys):
    _, store = dataset
    out = tmp_path / "aug.png"
    rc = main(["show", str(store), "--view", SAG_T1, "--augment", "--n", "2", "--draws", "2", "--out", str(out),
               "--max_slice_shift=1", "--rotate_deg=5", "--translate_frac=0.07"])
    assert rc == 0, capsys.readouterr().err
    assert "2 augmented draws" in capsys.readouterr().out
    tile = montage.sample_tile_size(3)  # 7 slices: the centre large, 3 on each side
    img = _png(out)
    # each row: the eval crop then 2 draws, 3 tiles of 324 x 225 px; 2 rows; 8 px gaps, 24 px header
    assert img.shape[:2] == (24 + 2 * 225 + 3 * 8, 3 * 324 + 4 * 8) == montage.grid_size(6, tile, 3)[::-1]
    spec = crop_spec(store, SAG_T1)
    got = augment_samples(store, SAG_T1, _rows(store, SAG_T1, 2), load_config(None, ["--max_slice_shift=1",
                          "--rotate_deg=5", "--translate_frac=0.07"]).loader, spec, 2, seed=0)  # the same rows, ranges, seed
    for i in range(6):
        x, y = montage._origin(i, tile, 3)
        assert _varied(img[y:y + 192, x:x + 192]), f"tile {i} is blank"
        red = np.argwhere(np.all(np.abs(img[y:y + 192, x:x + 192].astype(int) - montage.CROSS) <= 2, axis=-1))
        mark = (spec.out_px / 2,) * 2 if i % 3 == 0 else got["marks"][i // 3, i % 3 - 1]
        want = [int(v * 192 / spec.out_px) for v in mark[::-1]]  # (row, col) of the cross centre
        assert len(red) >= 12 and np.allclose(red.mean(0), want, atol=0.5), (i, red.mean(0), want)
    assert not np.allclose(got["marks"], spec.out_px / 2, atol=1)  # the draws did move the point


def test_augment_tile_follows_the_neighbours_and_draws(dataset, tmp_path):
    _, store = dataset
    from lsdc.show.cli import show_augmented
    s = show_augmented(store, SAG_T2, tmp_path / "a.png", LoaderConfig(), n=3, draws=4, neighbours=1)
    assert s["draws"] == 4 and s["neighbours"] == 1
    assert s["size"] == montage.grid_size(3 * 5, montage.sample_tile_size(1), 5)
    assert _png(tmp_path / "a.png").shape[:2] == s["size"][::-1]


def test_zero_ranges_draw_exactly_the_eval_crop(dataset):
    _, store = dataset
    spec, rows = crop_spec(store, SAG_T1), _rows(store, SAG_T1)
    got = augment_samples(store, SAG_T1, rows, load_config(None, ZERO).loader, spec, 3, seed=0)
    m = spec.slice_margin
    assert np.array_equal(got["eval"], _crop(_stored(store, SAG_T1, rows)[:, m:m + spec.slices], spec))
    assert _varied(got["eval"])
    for d in range(3):
        assert np.array_equal(got["draws"][:, d], got["eval"]), f"draw {d} differs from the eval crop"
    assert np.allclose(got["marks"], spec.out_px / 2, atol=1e-4)


def test_augment_is_forced_on_and_the_draws_follow_the_seed(dataset):
    _, store = dataset
    spec, rows = crop_spec(store, SAG_T1), _rows(store, SAG_T1, 2)
    off = load_config(None, ["--loader.augment=false"]).loader  # the config's own ranges, augment off
    a, b, c = (augment_samples(store, SAG_T1, rows, off, spec, 2, seed) for seed in (5, 5, 6))
    assert not np.array_equal(a["draws"][:, 0], a["eval"])  # augmented anyway
    assert np.array_equal(a["draws"], b["draws"]) and all(np.array_equal(a["params"][k], b["params"][k])
                                                          for k in a["params"])
    assert not np.array_equal(a["draws"], c["draws"]) and not np.allclose(a["params"]["angle_deg"],
                                                                          c["params"]["angle_deg"])


def test_a_slice_shift_alone_moves_the_window_by_the_drawn_shift(dataset):
    _, store = dataset
    spec, rows = crop_spec(store, SAG_T1), _rows(store, SAG_T1)
    draws = 4
    got = augment_samples(store, SAG_T1, rows, load_config(None, _without("max_slice_shift") +
                                                           ["--max_slice_shift=2"]).loader, spec, draws, seed=1)
    shifts = got["params"]["shift"].reshape(len(rows), draws)
    assert set(shifts.ravel().tolist()) >= {-1, 1} or set(shifts.ravel().tolist()) >= {-2, 2}, shifts
    stored = _crop(_stored(store, SAG_T1, rows), spec)
    for i in range(len(rows)):
        for d in range(draws):
            start = spec.slice_margin + shifts[i, d]
            assert np.array_equal(got["draws"][i, d], stored[i, start:start + spec.slices]), (i, d, shifts[i, d])
    assert np.allclose(got["marks"], spec.out_px / 2, atol=1e-4)


def test_a_translation_alone_moves_the_mark_by_minus_the_drawn_translation(dataset):
    _, store = dataset
    spec, rows = crop_spec(store, SAG_T1), _rows(store, SAG_T1)
    got = augment_samples(store, SAG_T1, rows, load_config(None, _without("translate_frac") +
                                                           ["--translate_frac=0.07"]).loader, spec, 3, seed=2)
    t = np.stack([got["params"]["tx_px"], got["params"]["ty_px"]], -1).reshape(len(rows), 3, 2)
    assert np.abs(t).max() > 1  # the draws did translate
    # out(d) = in(centre + t + (d - out centre)): the stored centre lands at out centre - t
    assert np.allclose(got["marks"], spec.out_px / 2 - t, atol=1e-3)


def test_the_mark_lands_on_the_warped_labelled_point(tmp_path):
    """A bright square on the stored centre, warped by the torch backend: its centroid is the mark
    (rotation, scale and translation together, so a wrong inverse or sign shows)."""
    spec = CropSpec(out_px=32)  # 38 px stored: the centre point is (19, 19), the square pixels 17..20
    lcfg = LoaderConfig(max_slice_shift=0, brightness=0, contrast=0, gamma=0, noise_std=0, rotate_deg=30,
                        scale_range=0.2, translate_frac=0.1)
    n = 16
    params = draw_params(np.random.default_rng(0), lcfg, spec, n)
    stacks = np.zeros((n, spec.slices, spec.store_px, spec.store_px), np.uint8)
    stacks[:, :, 17:21, 17:21] = 255
    img = grey_images(stacks, params, spec, 3, augment=True)[:, spec.slices // 2].astype(float)
    ys, xs = np.mgrid[:spec.out_px, :spec.out_px] + 0.5  # pixel-centre coordinates
    centroid = np.stack([(img * xs).sum((1, 2)), (img * ys).sum((1, 2))], -1) / img.sum((1, 2))[:, None]
    marks = centre_marks(params, spec)
    assert np.abs(marks - spec.out_px / 2).max() > 2  # the point did move
    assert np.allclose(centroid, marks, atol=0.3), np.abs(centroid - marks).max()


def test_a_shifted_window_numbers_its_slices_from_the_labelled_slice():
    stacks = [np.random.default_rng(i).integers(0, 255, (7, 20, 20), dtype=np.uint8) for i in range(2)]
    c = montage.sample_montage(stacks, [["a"], ["b"]], 3, cols=2, title="t", tags=["eval", "draw 1"], offsets=[0, -2])
    tile = montage.sample_tile_size(3)
    names = [[t.s for t in c.texts if x <= t.x < x + tile[0] and 24 <= t.y < 24 + tile[1]]
             for x, _ in (montage._origin(i, tile, 2) for i in range(2))]
    assert sorted(names[0]) == sorted(["0", "eval", "a", "-3", "-2", "-1", "+1", "+2", "+3"])
    assert sorted(names[1]) == sorted(["-2", "draw 1", "b", "-5", "-4", "-3", "-1", "0", "+1"])
