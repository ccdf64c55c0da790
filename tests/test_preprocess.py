"""The converter end to end on synthetic studies: store contract, geometry round trip with planted
markers, transfer-syntax invariance, every bad input, exit codes, kill -9 + resume, shard + merge, parts
deleted once the store is committed."""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from lsdc.core.cli import main
from lsdc.core.config import Config
from lsdc.core.overrides import load_config
from lsdc.core.readers import read_train
from lsdc.core.schema import BLANK, LABEL_COLUMNS, LEFT, RIGHT, SAG_T2, SPINAL, VIEWS
from lsdc.preprocess.cli import EXIT_SKIPPED
from lsdc.preprocess.convert import REPORT_FILE, preprocess
from lsdc.preprocess.parts import parts_dir
from lsdc.store.layout import VOLUME_VIEWS
from lsdc.store.reader import crop_spec, crops_array, open_root, read_index, read_volume_index, volumes_array
from lsdc.synth.generate import ground_truth

STUDIES, SEED = 4, 11


@pytest.fixture(scope="module")
def data(synth_factory):
    return synth_factory.dataset(STUDIES, SEED, 1, labels="clean")  # the crop tests' data as before


@pytest.fixture(scope="module")
def store(synth_factory, data):
    out = synth_factory.store(data, workers=2)  # the fork pool path
    return out, synth_factory.report(out)


def _copy(data, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(data, dst)
    return dst


def _assert_same_store(a, b):
    for view in VIEWS:
        ia, ib = read_index(a, view), read_index(b, view)
        pd.testing.assert_frame_equal(ia, ib)
        np.testing.assert_array_equal(crops_array(a, view)[:], crops_array(b, view)[:])
    for view in VOLUME_VIEWS:
        pd.testing.assert_frame_equal(read_volume_index(a, view), read_volume_index(b, view))
        np.testing.assert_array_equal(volumes_array(a, view)[:], volumes_array(b, view)[:])


#: what a complete store's folder holds once its parts are deleted
STORE_ENTRIES = {"zarr.json", "config.yaml", REPORT_FILE, *VIEWS}


def _stamps(out: Path) -> dict:
    """Every file of a store outside its parts, with its modification time (to tell a rewrite)."""
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and parts_dir(out) not in p.parents}


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


class Damage:
    """A private copy of the dataset being damaged, and what each corruption picked. The corruptions run in
    table order on this one copy: later picks avoid what earlier ones spoiled."""

    def __init__(self, data: Path):
        self.data, self.images = data, data / "train_images"
        self.t2, self.t1, self.ax = (_series_of(data, v) for v in ("sagittal_t2", "sagittal_t1", "axial_t2"))
        self.coords0 = pd.read_csv(data / "train_label_coordinates.csv")
        self.targets: dict[str, tuple] = {}  # case id -> (study, series) it damaged, or its coordinate row
        self._rows = None

    def files(self, s) -> list[Path]:
        return sorted((self.images / str(s[0]) / str(s[1])).glob("*.dcm"), key=lambda p: int(p.stem))

    def labelled(self, s) -> set[int]:
        return set(self.coords0[self.coords0.series_id == s[1]].instance_number)

    def intact_axial_rows(self) -> pd.Index:
        """Three Left Subarticular coordinate rows on axial series no series corruption touches, outside the
        first and the last sagittal T2 study (the truncated one and the one whose folder goes)."""
        if self._rows is None:
            coords = pd.read_csv(self.data / "train_label_coordinates.csv")
            spoiled = {t[1] for t in self.targets.values()} | {self.ax[-1][1]}
            self._rows = coords[(coords.condition == "Left Subarticular Stenosis") & ~coords.series_id.isin(spoiled)
                                & (coords.study_id != self.t2[-1][0]) & (coords.study_id != self.t2[0][0])].index
            assert len(self._rows) >= 3, "the seed must give three intact axial labels"
        return self._rows

    def edit_coordinate(self, k: int, column: str, value) -> tuple:
        coords = pd.read_csv(self.data / "train_label_coordinates.csv")
        row = coords.loc[self.intact_axial_rows()[k]]
        coords.loc[row.name, column] = value
        coords.to_csv(self.data / "train_label_coordinates.csv", index=False)
        return int(row.study_id), int(row.series_id), row.level.lower().replace("/", "_")


def _truncate_a_labelled_slice(d: Damage):
    d.truncated_instance = int(d.coords0[d.coords0.series_id == d.t2[0][1]].instance_number.iloc[0])
    f = d.images / str(d.t2[0][0]) / str(d.t2[0][1]) / f"{d.truncated_instance}.dcm"
    f.write_bytes(f.read_bytes()[:-5000])
    return d.t2[0]


def _add_a_non_dicom_file(d: Damage):
    (d.images / str(d.t2[1][0]) / str(d.t2[1][1]) / "999.dcm").write_text("not a dicom file")
    return d.t2[1]


def _drop_the_pixels_of_an_unlabelled_slice(d: Damage):
    f = next(f for f in d.files(d.ax[0]) if int(f.stem) not in d.labelled(d.ax[0]))
    ds = pydicom.dcmread(f)
    del ds.PixelData
    ds.save_as(f, enforce_file_format=True)
    return d.ax[0]


def _garble_every_slice(d: Damage):
    for f in d.files(d.t1[0]):  # a JPEG baseline header, garbage inside
        ds = pydicom.dcmread(f)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8garbage\xff\xd9"])
        ds.save_as(f, enforce_file_format=True)
    return d.t1[0]


def _keep_one_slice(d: Damage):
    for f in d.files(d.t1[1])[1:]:
        f.unlink()
    return d.t1[1]


def _repeat_a_slice_position(d: Damage):
    fs = d.files(d.t1[2])
    ds0, ds1 = pydicom.dcmread(fs[0]), pydicom.dcmread(fs[1])
    ds1.ImagePositionPatient = ds0.ImagePositionPatient
    ds1.save_as(fs[1], enforce_file_format=True)
    return d.t1[2]


def _blank_a_label(d: Damage):
    coords = pd.read_csv(d.data / "train_label_coordinates.csv")
    row = coords.loc[d.intact_axial_rows()[2]]
    level = row.level.lower().replace("/", "_")
    train = pd.read_csv(d.data / "train.csv", dtype=str, keep_default_na=False)
    train.loc[train.study_id == str(row.study_id), f"left_subarticular_stenosis_{level}"] = ""
    train.to_csv(d.data / "train.csv", index=False)
    return int(row.study_id), int(row.series_id), level


def _rename_a_series_description(d: Damage):
    sd = pd.read_csv(d.data / "train_series_descriptions.csv")
    sd.loc[(sd.series_id == d.ax[-1][1]), "series_description"] = "Coronal STIR"
    sd.to_csv(d.data / "train_series_descriptions.csv", index=False)
    return d.ax[-1]


def _remove_a_study_folder(d: Damage):
    """Not the study whose sagittal T2 must stay intact (t2[2])."""
    d.gone = int(d.t2[-1][0]) if d.t2[-1][0] != d.t2[2][0] else int(d.t2[0][0])
    shutil.rmtree(d.images / str(d.gone))
    return d.gone, None


def _only_its_own_sample(damaged, target, reasons):
    truncated = reasons["truncated"]
    assert len(truncated) == 1 and f"{damaged.d.truncated_instance}.dcm" in truncated[0]["detail"]
    study = target[0]
    clean, kept = (read_index(s, SAG_T2).groupby("study_id").size() for s in (damaged.clean, damaged.out))
    assert kept[study] == clean[study] - 1  # the series' other samples stay


def _the_series_and_its_coordinate_rows(damaged, target, reasons):
    unknown = reasons["unknown_series_description"]
    assert any(s["condition"] is None for s in unknown) and any(s["condition"] for s in unknown)


def _kept_with_label_minus_1(damaged, target, reasons):
    study, _, level = target
    ax_idx = read_index(damaged.out, "axial_t2")
    row = ax_idx[(ax_idx.study_id == study) & (ax_idx.condition == "left_subarticular_stenosis")
                 & (ax_idx.level == level)]
    assert row.label.tolist() == [-1]


@dataclass(frozen=True)
class Corruption:
    id: str
    corrupt: Callable[[Damage], tuple]  # damages the copy; returns the (study, series[, level]) it hit
    #: "skipped": a skip record of `reason` on what it hit; "noted": a note of `reason` on that series and no
    #: sample of it skipped; "kept": the sample stays (`check` says how)
    outcome: str
    reason: str | None
    survives: str  # what must still be converted (the outcome, `check` and the whole-copy tests below check it)
    check: Callable | None = None  # (damaged, target, skip records by reason): the case's own further checks


#: every bad input, applied in this order to one copy of the dataset, converted once
CORRUPTIONS = [
    Corruption("truncated", _truncate_a_labelled_slice, "skipped", "truncated",
               "the series' other samples: only the truncated slice's own sample is lost", _only_its_own_sample),
    Corruption("not_dicom", _add_a_non_dicom_file, "noted", "not_dicom", "every sample of the series"),
    Corruption("no_pixels", _drop_the_pixels_of_an_unlabelled_slice, "noted", "no_pixels", "every sample of the series"),
    Corruption("undecodable", _garble_every_slice, "skipped", "undecodable", "nothing of the series"),
    Corruption("one_slice", _keep_one_slice, "skipped", "one_slice", "nothing of the series (no localiser volume)"),
    Corruption("duplicate_collapsed", _repeat_a_slice_position, "noted", "duplicate_collapsed",
               "every sample of the series (the repeat collapsed)"),
    Corruption("point_outside_image", lambda d: d.edit_coordinate(0, "x", 99999.0), "skipped", "point_outside_image",
               "the study's other samples"),
    Corruption("instance_not_in_series", lambda d: d.edit_coordinate(1, "instance_number", 4242), "skipped",
               "instance_not_in_series", "the study's other samples"),
    Corruption("blank_label", _blank_a_label, "kept", None, "the sample itself, with label -1", _kept_with_label_minus_1),
    Corruption("unknown_series_description", _rename_a_series_description, "skipped", "unknown_series_description",
               "the study's other series", _the_series_and_its_coordinate_rows),
    Corruption("study_folder_missing", _remove_a_study_folder, "skipped", "study_folder_missing", "the other studies"),
]


@pytest.fixture(scope="module")
def damaged(data, store, tmp_path_factory):
    """Every corruption of the table applied to one copy, converted once with the CLI:
    (Damage, its store, the report, the exit code, what it printed, the clean store)."""
    base = tmp_path_factory.mktemp("bad")
    d = Damage(_copy(data, base))
    for case in CORRUPTIONS:
        d.targets[case.id] = case.corrupt(d)
    out = base / "store"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["preprocess", str(d.data), str(out), "--workers", "1", "--no-progress"])
    rep = json.loads((out / REPORT_FILE).read_text())
    return SimpleNamespace(d=d, out=out, rep=rep, rc=rc, printed=printed.getvalue(), clean=store[0])


@pytest.mark.parametrize("case", CORRUPTIONS, ids=lambda c: c.id)
def test_every_bad_input_is_skipped_with_a_reason(damaged, case):
    d, rep = damaged.d, damaged.rep
    target = d.targets[case.id]
    study, series = target[:2]
    reasons = {}
    for s in rep["skipped"]:
        reasons.setdefault(s["reason"], []).append(s)
    if case.outcome == "skipped":
        assert case.reason in reasons, case.reason
        if series is not None and study != d.gone:  # a series (or a slice of one), or a coordinate row
            assert any(s["study_id"] == study and s["series_id"] == series for s in reasons[case.reason]), case.reason
        if len(target) == 3:  # the row itself: its condition and level
            assert any((s["study_id"], s["series_id"], s["condition"], s["level"])
                       == (study, series, "left_subarticular_stenosis", target[2]) for s in reasons[case.reason])
    elif case.outcome == "noted" and study != d.gone:
        assert any(n["study_id"] == study and n["series_id"] == series for n in rep["notes"]
                   if n["reason"] == case.reason), case.reason
        assert not any(s["series_id"] == series for s in rep["skipped"]), f"{case.reason} cost a sample"
    if case.check is not None:
        case.check(damaged, target, reasons)


def test_bad_inputs_exit_0_and_every_skip_has_a_detail(damaged):
    """Skips are the report's business: a store converted as far as the data allows is a success."""
    assert damaged.rc == 0
    assert f"skipped {len(damaged.rep['skipped'])}: " in damaged.printed
    assert all(s["detail"] for s in damaged.rep["skipped"] if s["reason"] != "no_coordinates")


def test_bad_inputs_cost_no_sample_of_an_untouched_study(damaged):
    clean_counts = read_index(damaged.clean, SAG_T2).groupby("study_id").size()
    kept = read_index(damaged.out, SAG_T2).groupby("study_id").size()
    broken = {damaged.d.targets["truncated"][0], damaged.d.gone}
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


# -- exit codes, committed stores, parts ---------------------------------------------------------
def test_a_complete_store_holds_no_parts(store):
    out, rep = store
    assert set(os.listdir(out)) == STORE_ENTRIES and not parts_dir(out).exists()
    assert rep["fingerprint"] == open_root(out).attrs["fingerprint"]


def test_skips_exit_0_and_strict_exits_3_on_the_same_store(data, store, tmp_path, capsys):
    """A dataset with blank labels and levels without coordinates converts with exit 0; rerun with
    --strict on the complete store it converts nothing, rewrites nothing and exits 3."""
    out = tmp_path / "store"
    args = ["preprocess", str(data), str(out), "--workers", "1", "--no-progress"]
    assert main(args) == 0
    rep = json.loads((out / REPORT_FILE).read_text())
    assert rep["skip_reasons"].get("no_coordinates", 0) >= 1  # what the real data always has
    assert (read_train(data / "train.csv")[list(LABEL_COLUMNS)] == BLANK).to_numpy().any()  # and a blank label
    assert f"skipped {len(rep['skipped'])}: " in capsys.readouterr().out
    assert set(os.listdir(out)) == STORE_ENTRIES
    stamps = _stamps(out)
    assert main(args + ["--strict"]) == EXIT_SKIPPED
    printed = capsys.readouterr().out
    assert "nothing converted" in printed and "converted now 0, resumed 4" in printed
    assert _stamps(out) == stamps and set(os.listdir(out)) == STORE_ENTRIES  # left exactly as it was
    _assert_same_store(store[0], out)


def test_keep_parts_keeps_them_and_a_rerun_only_finishes_deleting_them(data, store, tmp_path):
    """--keep-parts leaves what a run killed between its commit and the deletion of its parts leaves;
    with one part already gone (killed during the deletion) the rerun converts nothing and deletes the rest."""
    out = tmp_path / "store"
    assert main(["preprocess", str(data), str(out), "--workers", "1", "--no-progress", "--keep-parts"]) == 0
    parts = sorted(parts_dir(out).glob("*.npz"))
    assert len(parts) == STUDIES and set(os.listdir(out)) == STORE_ENTRIES | {parts_dir(out).name}
    parts[0].unlink()
    stamps = _stamps(out)
    rep = preprocess(data, out, workers=1, progress=False)
    assert rep["up_to_date"] and rep["converted_now"] == 0 and rep["slices_read"] == 0
    assert set(os.listdir(out)) == STORE_ENTRIES and _stamps(out) == stamps
    _assert_same_store(store[0], out)


def _kill_when(args: list, out: Path, phase: Callable[[Path], bool]) -> None:
    """Run `lsdc preprocess ARGS` in a child process and SIGKILL it as soon as ``phase(out)`` holds."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "lsdc.core.cli", "preprocess", *args, "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not phase(out):
        time.sleep(0.002)
    if proc.poll() is None:  # (a child that already ended was reaped by poll: its pid is no longer ours)
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _converting(out: Path) -> bool:
    return any(parts_dir(out).glob("*.npz"))


def _assembling(out: Path) -> bool:
    return (out / ".building").exists()  # the writer builds each view there before renaming it into place


@pytest.mark.parametrize("phase", [_converting, _assembling], ids=["converting", "assembling"])
def test_kill_9_then_resume_gives_the_same_store(data, store, tmp_path, phase):
    """Killed while converting, the rerun converts only the studies without a part; killed while
    assembling, it converts nothing and assembles again. Either way: the clean run's store, no parts."""
    out = tmp_path / "store"
    for _ in range(3):  # the kill must land in its phase: a child that outran the poll is run again
        shutil.rmtree(out, ignore_errors=True)
        _kill_when([str(data), str(out), "--workers", "1"], out, phase)
        n_parts = len(list(parts_dir(out).glob("*.npz")))
        if not (out / REPORT_FILE).exists() and (n_parts < STUDIES if phase is _converting else n_parts == STUDIES):
            break
    else:
        pytest.fail(f"three runs finished before the kill during {phase.__name__}")
    assert n_parts >= 1
    (parts_dir(out) / "123.npz.999.tmp").write_bytes(b"half-written")  # what a kill mid-write leaves
    rep = preprocess(data, out, workers=1, progress=False)
    assert rep["resumed"] == n_parts and rep["converted_now"] == STUDIES - n_parts
    assert set(os.listdir(out)) == STORE_ENTRIES
    _assert_same_store(store[0], out)


def test_a_store_killed_while_reassembled_is_never_taken_for_complete(data, store, tmp_path):
    """A complete store, reconverted with another crop spec and killed while its views are being
    replaced: its report went first, so a rerun with the old inputs rebuilds it instead of keeping a mix."""
    out = tmp_path / "store"
    for _ in range(3):  # as above: the kill must land while the views are being replaced
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(store[0], out)
        _kill_when([str(data), str(out), "--workers", "1", "--preprocess.sagittal_t2.crop_mm=30"], out, _assembling)
        if not (out / REPORT_FILE).exists():
            break
    else:
        pytest.fail("three runs finished before the kill during assembly")
    rep = preprocess(data, out, workers=1, progress=False)
    assert rep["converted_now"] == STUDIES and not rep.get("up_to_date")  # the parts are the other spec's
    assert set(os.listdir(out)) == STORE_ENTRIES
    _assert_same_store(store[0], out)


def test_shards_then_merge_give_the_same_store(data, store, tmp_path):
    out = tmp_path / "store"
    r0 = preprocess(data, out, workers=1, shard_spec="0/2", progress=False)
    r1 = preprocess(data, out, workers=1, shard_spec="1/2", progress=False)
    assert r0["studies"] + r1["studies"] == STUDIES
    assert not (out / SAG_T2).exists() and (out / "report.shard-0-of-2.json").is_file()
    assert len(list(parts_dir(out).glob("*.npz"))) == STUDIES  # shards keep their parts for the assembling run
    merged = preprocess(data, out, workers=1, progress=False)
    assert merged["converted_now"] == 0 and merged["resumed"] == STUDIES
    assert not parts_dir(out).exists()
    _assert_same_store(store[0], out)
    assert open_root(out).attrs["fingerprint"] == open_root(store[0]).attrs["fingerprint"]
    again = preprocess(data, out, workers=1, shard_spec="0/2", progress=False)  # a script that always runs it
    assert again["up_to_date"] and again["converted_now"] == 0 and not parts_dir(out).exists()


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
