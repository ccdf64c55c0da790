"""The converter end to end on synthetic studies: store contract, geometry round trip with planted
markers, transfer-syntax invariance, every bad input, kill -9 + resume, shard + merge."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from lsdc.core.cli import main
from lsdc.core.config import Config, load_config
from lsdc.core.schema import LEFT, LEVELS, RIGHT, SAG_T2, SPINAL, VIEWS
from lsdc.preprocess.convert import EXIT_SKIPPED, REPORT_FILE, preprocess
from lsdc.preprocess.parts import parts_dir
from lsdc.preprocess.store import crop_spec, crops_array, open_root, read_index, read_volume_index, volumes_array
from lsdc.synth.generate import ground_truth, synth

STUDIES, SEED = 4, 11


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("pp") / "data"
    synth(out, STUDIES, SEED, test_studies=1, workers=2, label_model="clean")  # the crop tests' data as before
    return out


@pytest.fixture(scope="module")
def store(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pp") / "store"
    rep = preprocess(data, out, workers=2, progress=False)  # the fork pool path
    return out, rep


def _copy(data, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(data, dst)
    return dst


def _assert_same_store(a, b):
    for view in VIEWS:
        ia, ib = read_index(a, view), read_index(b, view)
        pd.testing.assert_frame_equal(ia, ib)
        np.testing.assert_array_equal(crops_array(a, view)[:], crops_array(b, view)[:])


# -- the contract ---------------------------------------------------------------------------------
def test_store_contract(store):
    out, rep = store
    root = open_root(out)
    cfg = Config()
    for key in ("preprocess", "versions", "fingerprint", "counts"):
        assert key in root.attrs
    assert {"lsdc", "zarr", "pydicom", "numba", "numpy"} <= set(root.attrs["versions"])
    assert (out / "config.yaml").is_file() and (out / REPORT_FILE).is_file()
    for view in VIEWS:
        spec = crop_spec(out, view)
        assert spec == cfg.preprocess.spec(view)
        idx, crops = read_index(out, view), crops_array(out, view)
        assert crops.dtype == np.uint8 and crops.shape == (len(idx), spec.store_slices, spec.store_px, spec.store_px)
        assert crops.chunks[0] == cfg.preprocess.chunk_samples
        assert len(idx) == rep["counts"][view]["samples"] > 0
        assert not idx.duplicated(["study_id", "condition", "level"]).any()
        assert set(idx.label) <= {-1, 0, 1, 2}
        assert (crops[:].reshape(len(idx), spec.store_slices, -1).max(axis=2) > 0).all()  # never black frames
    vols, vidx = volumes_array(out, SAG_T2), read_volume_index(out, SAG_T2)
    assert vols.shape == (len(vidx), cfg.preprocess.volume_slices, cfg.preprocess.volume_px, cfg.preprocess.volume_px)
    assert len(vidx) == STUDIES - rep["skip_reasons"].get("study_folder_missing", 0) or len(vidx) >= STUDIES - 1


def test_points_land_on_the_planted_anatomy(store):
    """index x/y/z_mm (from the converter's own geometry) = the phantom's landmark; sides are patient sides."""
    out, _ = store
    truth = {sid: anat for sid, (split, anat, _) in ground_truth(STUDIES, SEED, 1, label_model="clean").items()}
    for view in VIEWS:
        idx = read_index(out, view)
        for r in idx.itertuples():
            point = np.array([r.x_mm, r.y_mm, r.z_mm])
            dist = np.linalg.norm(point - truth[r.study_id].landmark(r.condition, r.level))
            # in-plane within ~1.5 mm; out of plane up to half a slice gap
            assert dist < 4.0, (view, r.study_id, r.condition, r.level, dist)
            if r.side in (LEFT, RIGHT):  # DICOM LPS: patient left is +x
                canal_x = truth[r.study_id].landmark(SPINAL, r.level)[0]
                assert (r.x_mm > canal_x) == (r.side == LEFT), (view, r.side, r.x_mm, canal_x)


def _plant_markers(data: Path) -> None:
    """A 3x3 marker at every labelled (instance, x, y) on the source DICOMs, dark on bright
    surroundings and bright on dark ones, so it shows after the intensity window either way."""
    coords = pd.read_csv(data / "train_label_coordinates.csv")
    for r in coords.itertuples():
        path = data / "train_images" / str(r.study_id) / str(r.series_id) / f"{r.instance_number}.dcm"
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        arr = ds.pixel_array.copy()
        row, col = int(round(r.y)), int(round(r.x))
        local = arr[row - 1:row + 2, col - 1:col + 2]
        arr[row - 1:row + 2, col - 1:col + 2] = arr.min() if local.mean() > np.median(arr) else arr.max()
        ds.PixelData = arr.tobytes()
        ds.save_as(path, enforce_file_format=True)


def test_crop_centre_is_the_labelled_point_on_the_labelled_slice(data, store, tmp_path):
    clean, _ = store
    marked = _copy(data, tmp_path)
    _plant_markers(marked)
    out = tmp_path / "store"
    preprocess(marked, out, workers=1, progress=False)
    for view in VIEWS:
        spec = crop_spec(out, view)
        idx = read_index(out, view)
        assert len(idx) == len(read_index(clean, view))
        diff = crops_array(out, view)[:].astype(int) - crops_array(clean, view)[:].astype(int)
        half, c = spec.store_slices // 2, spec.store_px / 2 - 0.5
        mm_per_px = spec.store_mm / spec.store_px
        for i, r in enumerate(idx.itertuples()):
            src_px = max(r.spacing_row_mm, r.spacing_col_mm) / mm_per_px  # one source pixel in crop pixels
            win = int(np.ceil(3 * src_px))
            lo, hi = int(c) - win, int(c) + win + 2
            for k in range(spec.store_slices):
                source_slice = min(max(r.slice_index + k - half, 0), r.n_slices - 1)
                patch = np.abs(diff[i, k, lo:hi, lo:hi])
                if source_slice == r.slice_index:  # the labelled slice (or its repeat at a series end)
                    assert patch.max() > 15, (view, i, k)  # well above the window nudge below
                    rr, cc = np.nonzero(patch > 0.5 * patch.max())
                    w = patch[rr, cc]
                    centre = np.array([(rr * w).sum() / w.sum() + lo, (cc * w).sum() / w.sum() + lo])
                    assert np.abs(centre - c).max() <= src_px, (view, i, centre, c, src_px)
                else:  # no marker; the marker pixels nudge the series window by at most a grey level
                    assert patch.max() <= 2, (view, i, k)


def test_transfer_syntaxes_give_identical_crops(data, store, tmp_path):
    clean, _ = store
    recoded = _copy(data, tmp_path)
    syntaxes = [RLELossless, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    series_dirs = sorted(p for p in (recoded / "train_images").glob("*/*") if p.is_dir())
    for k, d in enumerate(series_dirs):
        ts = syntaxes[k % len(syntaxes)]
        for f in d.glob("*.dcm"):
            ds = pydicom.dcmread(f)
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress()
            if ts == RLELossless:
                ds.compress(RLELossless)
            else:
                ds.file_meta.TransferSyntaxUID = ts
            ds.save_as(f, enforce_file_format=True)
        assert pydicom.dcmread(next(d.glob("*.dcm"))).file_meta.TransferSyntaxUID == ts
    out = tmp_path / "store"
    preprocess(recoded, out, workers=1, progress=False)
    _assert_same_store(clean, out)


# -- bad input: skipped with a reason, the rest converted -----------------------------------------
def _series_of(data, view):
    sd = pd.read_csv(data / "train_series_descriptions.csv")
    want = {"sagittal_t2": "Sagittal T2/STIR", "sagittal_t1": "Sagittal T1", "axial_t2": "Axial T2"}[view]
    return [(r.study_id, r.series_id) for r in sd.itertuples() if r.series_description == want]


def test_every_bad_input_is_skipped_with_a_reason(data, store, tmp_path, capsys):
    bad = _copy(data, tmp_path)
    images = bad / "train_images"
    t2 = _series_of(bad, "sagittal_t2")
    t1 = _series_of(bad, "sagittal_t1")
    files = lambda s: sorted((images / str(s[0]) / str(s[1])).glob("*.dcm"), key=lambda p: int(p.stem))
    expect, notes = {}, {}  # reason -> (study, series): a skipped sample / a note, nothing lost
    coords0 = pd.read_csv(bad / "train_label_coordinates.csv")
    # 1. truncated pixel data on a labelled slice: that sample is skipped, the series' others stay
    labelled = int(coords0[coords0.series_id == t2[0][1]].instance_number.iloc[0])
    f = images / str(t2[0][0]) / str(t2[0][1]) / f"{labelled}.dcm"
    f.write_bytes(f.read_bytes()[:-5000])
    expect["truncated"] = t2[0]
    # 2. a non-DICOM file in a series: it drops out with a note
    (images / str(t2[1][0]) / str(t2[1][1]) / "999.dcm").write_text("not a dicom file")
    notes["not_dicom"] = t2[1]
    # 3. missing pixel data on an unlabelled slice: a note
    ax_series = _series_of(bad, "axial_t2")
    ax_labelled = set(coords0[coords0.series_id == ax_series[0][1]].instance_number)
    f = next(f for f in files(ax_series[0]) if int(f.stem) not in ax_labelled)
    ds = pydicom.dcmread(f)
    del ds.PixelData
    ds.save_as(f, enforce_file_format=True)
    notes["no_pixels"] = ax_series[0]
    # 4. every slice an undecodable stream (JPEG baseline header, garbage inside): the series is lost
    for f in files(t1[0]):
        ds = pydicom.dcmread(f)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8garbage\xff\xd9"])
        ds.save_as(f, enforce_file_format=True)
    expect["undecodable"] = t1[0]
    # 5. one-slice series: no localiser volume, no sample
    for f in files(t1[1])[1:]:
        f.unlink()
    expect["one_slice"] = t1[1]
    # 6. a repeated slice position: collapsed with a note
    fs = files(t1[2])
    ds0, ds1 = pydicom.dcmread(fs[0]), pydicom.dcmread(fs[1])
    ds1.ImagePositionPatient = ds0.ImagePositionPatient
    ds1.save_as(fs[1], enforce_file_format=True)
    notes["duplicate_collapsed"] = t1[2]
    # 7-8. coordinates outside the image / instance number absent; 9. a blank label with coordinates
    coords = pd.read_csv(bad / "train_label_coordinates.csv")
    spoiled = {series for _, series in [*expect.values(), *notes.values()]} | {ax_series[-1][1]}
    ax = coords[(coords.condition == "Left Subarticular Stenosis") & ~coords.series_id.isin(spoiled)
                & (coords.study_id != t2[-1][0]) & (coords.study_id != t2[0][0])].index
    assert len(ax) >= 3, "the seed must give three intact axial labels"
    coords.loc[ax[0], "x"] = 99999.0
    coords.loc[ax[1], "instance_number"] = 4242
    coords.to_csv(bad / "train_label_coordinates.csv", index=False)
    train = pd.read_csv(bad / "train.csv", dtype=str, keep_default_na=False)
    blank = coords.loc[ax[2]]
    col = f"left_subarticular_stenosis_{blank.level.lower().replace('/', '_')}"
    train.loc[train.study_id == str(blank.study_id), col] = ""
    train.to_csv(bad / "train.csv", index=False)
    # 10. a series description not one of the three
    sd = pd.read_csv(bad / "train_series_descriptions.csv")
    sd.loc[(sd.series_id == ax_series[-1][1]), "series_description"] = "Coronal STIR"
    sd.to_csv(bad / "train_series_descriptions.csv", index=False)
    # 11. a study folder missing (not the one whose sagittal T2 stays intact: t2[2])
    gone = int(t2[-1][0]) if t2[-1][0] != t2[2][0] else int(t2[0][0])
    shutil.rmtree(images / str(gone))

    out = tmp_path / "store"
    rc = main(["preprocess", str(bad), str(out), "--workers", "1", "--no-progress"])
    assert rc == EXIT_SKIPPED
    assert "skipped" in capsys.readouterr().out
    rep = json.loads((out / REPORT_FILE).read_text())
    reasons = {}
    for s in rep["skipped"]:
        reasons.setdefault(s["reason"], []).append(s)
    for reason, (study, series) in expect.items():
        if study == gone:
            continue
        assert any(s["study_id"] == study and s["series_id"] == series for s in reasons[reason]), reason
    for reason, (study, series) in notes.items():
        if study == gone:
            continue
        assert any(n["study_id"] == study and n["series_id"] == series for n in rep["notes"]
                   if n["reason"] == reason), reason
        assert not any(s["series_id"] == series for s in rep["skipped"]), f"{reason} cost a sample"
    truncated = [s for s in rep["skipped"] if s["reason"] == "truncated"]
    assert len(truncated) == 1 and f"{labelled}.dcm" in truncated[0]["detail"]  # only its own sample
    for reason in ("point_outside_image", "instance_not_in_series", "unknown_series_description",
                   "series_description_unknown", "study_folder_missing"):
        assert reason in reasons, reason
    assert all(s["detail"] for s in rep["skipped"] if s["reason"] != "no_coordinates")
    # the untouched samples are all there, the blank one kept with label -1
    ax_idx = read_index(out, "axial_t2")
    row = ax_idx[(ax_idx.study_id == blank.study_id) & (ax_idx.condition == "left_subarticular_stenosis")
                 & (ax_idx.level == blank.level.lower().replace("/", "_"))]
    assert row.label.tolist() == [-1]
    clean_counts = read_index(store[0], SAG_T2).groupby("study_id").size()
    kept = read_index(out, SAG_T2).groupby("study_id").size()
    broken = {expect["truncated"][0], gone}
    intact = [study for study in clean_counts.index if study not in broken]
    assert intact, "the test must leave some sagittal T2 series intact"
    for study in intact:
        assert kept.get(study) == clean_counts[study]


def test_test_split_needs_coords_and_takes_them(data, tmp_path, capsys):
    assert main(["preprocess", str(data), str(tmp_path / "t"), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--coords" in err[0]
    rep = preprocess(data, tmp_path / "t", split="test", coords=data / "test_label_coordinates.csv",
                     workers=1, progress=False)
    idx = read_index(tmp_path / "t", SAG_T2)
    assert rep["counts"][SAG_T2]["samples"] == len(idx) > 0 and (idx.label == -1).all()


# -- crash safety and shards ----------------------------------------------------------------------
def test_kill_9_then_resume_gives_the_same_store(data, store, tmp_path):
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "lsdc.core.cli", "preprocess", str(data), str(out),
                             "--workers", "1", "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(parts_dir(out).glob("*.npz")):
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_parts = len(list(parts_dir(out).glob("*.npz")))
    assert 1 <= n_parts < STUDIES and not (out / REPORT_FILE).exists(), "killed too late to test resume"
    (parts_dir(out) / "123.npz.999.tmp").write_bytes(b"half-written")  # what a kill mid-write leaves
    rep = preprocess(data, out, workers=1, progress=False)
    assert rep["resumed"] == n_parts and rep["converted_now"] == STUDIES - n_parts
    assert not list(parts_dir(out).glob("*.tmp"))
    _assert_same_store(store[0], out)


def test_shards_then_merge_give_the_same_store(data, store, tmp_path):
    out = tmp_path / "store"
    r0 = preprocess(data, out, workers=1, shard_spec="0/2", progress=False)
    r1 = preprocess(data, out, workers=1, shard_spec="1/2", progress=False)
    assert r0["studies"] + r1["studies"] == STUDIES
    assert not (out / SAG_T2).exists() and (out / "report.shard-0-of-2.json").is_file()
    merged = preprocess(data, out, workers=1, progress=False)
    assert merged["converted_now"] == 0 and merged["resumed"] == STUDIES
    _assert_same_store(store[0], out)
    assert open_root(out).attrs["fingerprint"] == open_root(store[0]).attrs["fingerprint"]


def test_changed_crop_spec_redoes_the_parts(data, store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(store[0], out)
    cfg = load_config(None, ["--preprocess.sagittal_t2.crop_mm=30"])
    rep = preprocess(data, out, workers=1, cfg=cfg, progress=False)
    assert rep["converted_now"] == STUDIES
    assert crop_spec(out, SAG_T2).crop_mm == 30.0
    assert open_root(out).attrs["fingerprint"] != open_root(store[0]).attrs["fingerprint"]


def test_bad_arguments(data, tmp_path, capsys):
    assert main(["preprocess", str(data), str(tmp_path / "o"), "--shard", "2/2"]) == 2
    assert main(["preprocess", str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("lsdc preprocess: error:") for e in err)


# -- bench convert ---------------------------------------------------------------------------------
def test_bench_convert_reports_every_figure(data, tmp_path, capsys):
    """`lsdc bench convert --data` on the 4-study set: the JSON keys the issue names, rates of the same
    files on both sides, the smallest kernel ratio, and a peak RSS per subset size."""
    out = tmp_path / "bench.json"
    assert main(["bench", "convert", "--data", str(data), "--repeats", "1", "--workers", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    n_files = sum(1 for _ in (data / "train_images").rglob("*.dcm"))
    assert res["slices"] > 0 and res["slices"] <= n_files
    for key in ("converter_slices_per_s", "pydicom_read_slices_per_s", "converter_parallel_slices_per_s",
                "pydicom_read_parallel_slices_per_s", "kernel_speedup", "peak_rss_mb"):
        assert isinstance(res[key], float) and res[key] > 0, key
    assert res["converter_vs_pydicom"] == pytest.approx(res["converter_slices_per_s"] / res["pydicom_read_slices_per_s"])
    assert res["kernel_speedup"] == min(k["speedup"] for k in res["kernels"].values())
    assert {"series_window", "crop_boxes", "resample_volume"} <= set(res["kernels"])
    assert set(res["peak_rss_mb_by_studies"]) == {"2", "4"} and res["peak_rss_mb"] < 1500
    assert "converter / pydicom" in capsys.readouterr().out
