"""Series split into stacks: angled axial slabs, slices of another matrix, repeated positions, gaps,
unreadable slices; the converter, the localiser volumes and the axial projection all use the stacks."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_files import SAGITTAL, write_slice

from lsdc.core.geometry import slice_normal
from lsdc.core.overrides import load_config
from lsdc.core.readers import COORD_COLUMNS, SERIES_COLUMNS, TRAIN_COLUMNS
from lsdc.core.schema import LABEL_COLUMNS
from lsdc.localizer import project
from lsdc.preprocess.convert import REPORT_FILE, preprocess
from lsdc.preprocess.stacks import split_stacks
from lsdc.store.reader import crops_array, read_index, read_volume_index

STUDY, AXIAL, SAG_T2_ID, SAG_T1_ID = 4242, 11, 22, 33
PX, SPACING = 32, (1.0, 1.0)
#: axial slabs: (level, centre z mm, tilt degrees about x); instances numbered slab after slab,
#: against spatial order inside each slab
SLABS = (("l5_s1", -40.0, -14.0), ("l4_l5", 0.0, 6.0), ("l3_l4", 40.0, 17.0))
SLAB_SLICES, SLAB_GAP_MM = 5, 4.0
BLOB = 2000
LEFT_XY, RIGHT_XY = (20.0, 12.0), (10.0, 12.0)


def _axial_iop(tilt_deg: float) -> tuple:
    t = np.radians(tilt_deg)
    return (1.0, 0.0, 0.0, 0.0, round(float(np.cos(t)), 6), round(float(np.sin(t)), 6))


def _ipp_for_centre(centre, iop) -> np.ndarray:
    x, y = np.asarray(iop[:3]), np.asarray(iop[3:])
    return np.asarray(centre, float) - (PX - 1) / 2 * SPACING[1] * x - (PX - 1) / 2 * SPACING[0] * y


def _image(background: int, points=()) -> np.ndarray:
    img = np.full((PX, PX), background, np.uint16)
    for x, y in points:
        img[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = BLOB
    return img


def _write_axial(folder: Path) -> dict:
    """Three angled slabs; returns {level: (labelled instance, [instances in spatial order], backgrounds)}."""
    folder.mkdir(parents=True)
    out, inst = {}, 0
    for k, (level, z, tilt) in enumerate(SLABS):
        iop = _axial_iop(tilt)
        normal = slice_normal(iop)
        instances = list(range(inst + SLAB_SLICES, inst, -1))  # against spatial order
        inst += SLAB_SLICES
        backgrounds = [100 + 100 * k + 10 * j for j in range(SLAB_SLICES)]
        for j in range(SLAB_SLICES):
            centre = np.array([0.0, 0.0, z]) + (j - SLAB_SLICES // 2) * SLAB_GAP_MM * normal
            write_slice(folder / f"{instances[j]}.dcm", _image(backgrounds[j], (LEFT_XY, RIGHT_XY)),
                        instance=instances[j], ipp=_ipp_for_centre(centre, iop), iop=iop, spacing=SPACING,
                        thickness=None, SeriesDescription="Axial T2")
        out[level] = (instances[SLAB_SLICES // 2], instances, backgrounds)
    return out


def _write_sagittal(folder: Path, n: int, odd: int = 0, repeat_of: int | None = None, description="Sagittal T2/STIR"):
    """n slices 4 mm apart (instances 1..n in spatial order), ``odd`` slices of a 24 x 24 matrix past
    the far end, and a repeat of instance ``repeat_of`` at its position as instance n + odd + 1."""
    folder.mkdir(parents=True)
    normal = slice_normal(SAGITTAL)
    for j in range(n + odd):
        shape = PX if j < n else 24
        img = np.full((shape, shape), 50 + 10 * j, np.uint16)
        img[15:18, 15:18] = BLOB
        write_slice(folder / f"{j + 1}.dcm", img, instance=j + 1, ipp=(j * 4.0 * normal) + np.array([0, -15.5, 15.5]),
                    spacing=SPACING, thickness=None, SeriesDescription=description)
    if repeat_of is not None:
        ds = pydicom.dcmread(folder / f"{repeat_of}.dcm")
        ds.InstanceNumber = n + odd + 1
        ds.save_as(folder / f"{n + odd + 1}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("stacks")
    images = root / "train_images" / str(STUDY)
    slabs = _write_axial(images / str(AXIAL))
    _write_sagittal(images / str(SAG_T2_ID), n=6, odd=2)
    _write_sagittal(images / str(SAG_T1_ID), n=7, repeat_of=3, description="Sagittal T1")
    pd.DataFrame([(STUDY, AXIAL, "Axial T2"), (STUDY, SAG_T2_ID, "Sagittal T2/STIR"), (STUDY, SAG_T1_ID, "Sagittal T1")],
                 columns=list(SERIES_COLUMNS)).to_csv(root / "train_series_descriptions.csv", index=False)
    coords = []
    for level, (inst, _, _) in slabs.items():
        title = level.upper().replace("_", "/")
        coords += [(STUDY, AXIAL, inst, "Left Subarticular Stenosis", title, *LEFT_XY),
                   (STUDY, AXIAL, inst, "Right Subarticular Stenosis", title, *RIGHT_XY)]
    coords += [(STUDY, SAG_T2_ID, 2, "Spinal Canal Stenosis", "L4/L5", 16.0, 16.0),
               (STUDY, SAG_T2_ID, 5, "Spinal Canal Stenosis", "L5/S1", 16.0, 16.0),
               (STUDY, SAG_T1_ID, 3, "Left Neural Foraminal Narrowing", "L4/L5", 16.0, 16.0)]
    pd.DataFrame(coords, columns=list(COORD_COLUMNS)).to_csv(root / "train_label_coordinates.csv", index=False)
    labels = {c: "Normal/Mild" for c in LABEL_COLUMNS}
    pd.DataFrame([{"study_id": STUDY, **labels}], columns=list(TRAIN_COLUMNS)).to_csv(root / "train.csv", index=False)
    cfg = load_config(None, ["--preprocess.axial_t2.crop_mm=10", "--preprocess.axial_t2.out_px=16",
                             "--preprocess.sagittal_t2.out_px=16", "--preprocess.sagittal_t1.out_px=16",
                             "--volume_px=32", "--volume_slices=4"])
    store = root / "store"
    report = preprocess(root, store, "train", None, 1, None, cfg, progress=False)
    return SimpleNamespace(root=root, images=images, slabs=slabs, store=store, report=report)


# -- the split rules, on headers ------------------------------------------------------------------
def _h(z, iop=SAGITTAL, rows=8, cols=8, spacing=(0.5, 0.5), instance=0):
    return SimpleNamespace(ipp=tuple(z * slice_normal(iop)), iop=iop, rows=rows, cols=cols, spacing_rc=spacing,
                           instance_number=instance)


def test_gap_over_one_and_a_half_spacings_splits_a_stack():
    zs = [0, 4, 8, 12, 24, 28, 32]  # a 12 mm gap against a 4 mm median
    split = split_stacks([_h(z, instance=i + 1) for i, z in enumerate(zs)])
    assert split.stacks == [[0, 1, 2, 3], [4, 5, 6]]
    split = split_stacks([_h(z, instance=i + 1) for i, z in enumerate([0, 4, 9.9, 14])])  # 5.9 < 1.5 x 4.1
    assert split.stacks == [[0, 1, 2, 3]]


def test_stacks_are_numbered_in_spatial_order_whatever_the_file_order():
    up, flat, down = _axial_iop(15.0), _axial_iop(0.0), _axial_iop(-15.0)
    headers = [_h(40, up, instance=1), _h(44, up, instance=2), _h(4, flat, instance=3), _h(0, flat, instance=4),
               _h(-40, down, instance=5), _h(-36, down, instance=6)]
    split = split_stacks(headers)
    assert [[headers[i].instance_number for i in st] for st in split.stacks] == [[5, 6], [4, 3], [1, 2]]


def test_three_at_one_position_resolve_to_one_survivor():
    hs = [_h(0, instance=1), _h(0, instance=7), _h(0.001, instance=3), _h(4, instance=2)]
    split = split_stacks(hs)
    assert split.stacks == [[1, 3]] and split.alias == {1: 7, 3: 7}
    split = split_stacks(hs, keep_instances=[3])
    assert split.stacks == [[2, 3]] and split.alias == {1: 3, 7: 3}


# -- the converter -----------------------------------------------------------------------------------
def test_angled_slabs_convert_every_labelled_sample_from_its_own_slab(dataset):
    idx = read_index(dataset.store, "axial_t2")
    assert len(idx) == 2 * len(SLABS)
    crops = crops_array(dataset.store, "axial_t2")[:]
    files = np.stack([pydicom.dcmread(p).pixel_array for p in sorted((dataset.images / str(AXIAL)).glob("*.dcm"))])
    lo, hi = np.percentile(files.astype(np.float32), [0.5, 99.5])  # the series window (every voxel)
    for k, (level, _, _) in enumerate(SLABS):
        inst, _, backgrounds = dataset.slabs[level]
        rows = idx[idx.level == level]
        assert set(rows["stack"]) == {k} and set(rows.stack_slices) == {SLAB_SLICES}
        assert set(rows.slice_index) == {SLAB_SLICES // 2} and set(rows.instance_number) == {inst}
        for i in rows.index:
            crop = crops[i]  # (11, 18, 18)
            centre = crop.shape[0] // 2
            h, w = crop.shape[1:]
            assert crop[centre, h // 2, w // 2] == 255  # the blob under the labelled point
            offsets = np.arange(crop.shape[0]) - centre + SLAB_SLICES // 2
            expect = np.array(backgrounds)[np.clip(offsets, 0, SLAB_SLICES - 1)]  # own slab, edge repeated
            grey = np.clip(np.floor((expect - lo) * 255 / (hi - lo) + 0.5), 0, 255)
            np.testing.assert_allclose(crop[:, 0, 0], grey, atol=1)
    rep = dataset.report
    assert not [s for s in rep["skipped"] if s["reason"] != "no_coordinates"]
    split = {r["series_id"]: r["stacks"] for r in rep["split_series"]}
    assert split == {AXIAL: 3, SAG_T2_ID: 2}
    assert rep["stacks"]["split_series"] == 2 and rep["stacks"]["collapsed_duplicates"] == 1


def test_other_matrix_slices_do_not_cost_the_series_its_samples(dataset):
    idx = read_index(dataset.store, "sagittal_t2")
    assert sorted(idx.instance_number) == [2, 5]
    assert set(idx["stack"]) == {0} and set(idx.stack_slices) == {6} and set(idx.n_slices) == {8}
    vol = read_volume_index(dataset.store, "sagittal_t2")  # the localiser volume: the largest stack
    assert len(vol) == 1 and vol["stack"][0] == 0 and vol.n_slices[0] == 6
    assert json.loads(vol.instance_numbers[0]) == [1, 2, 3, 4, 5, 6]


def test_a_repeated_position_is_collapsed_and_noted(dataset):
    idx = read_index(dataset.store, "sagittal_t1")
    assert idx.instance_number.tolist() == [3] and idx.stack_slices.tolist() == [7]  # the labelled one kept
    report = json.loads((dataset.store / REPORT_FILE).read_text())
    notes = [n for n in report["notes"] if n["reason"] == "duplicate_collapsed"]
    assert len(notes) == 1 and notes[0]["series_id"] == SAG_T1_ID and "kept 3" in notes[0]["detail"]
    assert report["note_reasons"] == {"duplicate_collapsed": 1}


def test_no_slice_thickness_or_spacing_between_slices_needed(dataset):
    for p in dataset.images.rglob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        assert "SliceThickness" not in ds and "SpacingBetweenSlices" not in ds
    assert len(read_index(dataset.store, "axial_t2")) == 6 and len(read_index(dataset.store, "sagittal_t2")) == 2


def test_an_unreadable_slice_costs_only_its_own_sample(dataset, tmp_path):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(dataset.root, root, ignore=shutil.ignore_patterns("store"))
    t2 = root / "train_images" / str(STUDY) / str(SAG_T2_ID)
    for inst in (2, 4):  # 2 is labelled, 4 is not
        f = t2 / f"{inst}.dcm"
        f.write_bytes(f.read_bytes()[:-200])
    out = tmp_path / "store"
    rep = preprocess(root, out, "train", None, 1, None, None, progress=False)
    skipped = [s for s in rep["skipped"] if s["reason"] != "no_coordinates"]
    assert [(s["reason"], s["level"]) for s in skipped] == [("truncated", "l4_l5")] and "2.dcm" in skipped[0]["detail"]
    assert read_index(out, "sagittal_t2").instance_number.tolist() == [5]
    dropped = [n for n in rep["notes"] if n["reason"] == "truncated"]
    assert sorted(Path(n["detail"].split(": ")[1]).name for n in dropped) == ["2.dcm", "4.dcm"]


# -- predict: projection into every stack ------------------------------------------------------------
def test_projection_picks_the_slab_that_contains_the_point(dataset):
    stacks, bad = project.read_stacks(dataset.images, [AXIAL])
    assert not bad and len(stacks) == 3
    for k, (level, _, _) in enumerate(SLABS):
        inst, instances, _ = dataset.slabs[level]
        st = stacks[k]
        j = st.slice_of(inst)
        point = st.pixel_to_patient(j, *LEFT_XY)
        hit = project.project(point, stacks)
        assert (hit.series_id, hit.stack, hit.instance_number, hit.inside) == (AXIAL, k, inst, True)
        assert (hit.x, hit.y) == pytest.approx(LEFT_XY, abs=1e-3)
        near = st.pixel_to_patient(j + 1, *LEFT_XY) + 0.4 * SLAB_GAP_MM * st.normal  # within half a gap
        assert project.project(near, stacks).instance_number == int(st.instance_numbers[j + 1])
    between = np.array([0.0, 0.0, -20.0])  # halfway between two slabs, 10 mm past both ends: no stack
    assert project.project(between, stacks) is None


def test_axial_stack_exact_counts_points_in_the_labelled_series_and_stack(dataset):
    from lsdc.core.readers import read_coordinates
    truth = read_coordinates(dataset.root / "train_label_coordinates.csv")
    images = dataset.root / "train_images"
    assert project.axial_stack_exact(images, truth, truth) == {"axial_stack_exact": 1.0, "axial_points": 6,
                                                                "axial_predicted": 6}
    pred = truth.copy()
    ss = pred.index[pred.condition == "left_subarticular_stenosis"]
    pred.loc[ss[1], "instance_number"] = dataset.slabs[pred.at[ss[1], "level"]][1][0]  # same slab: exact
    pred.loc[ss[0], "instance_number"] = dataset.slabs["l3_l4" if pred.at[ss[0], "level"] != "l3_l4" else "l5_s1"][0]
    pred = pred.drop(index=ss[2])  # no prediction: a miss
    res = project.axial_stack_exact(images, pred, truth)
    assert res == {"axial_stack_exact": round(4 / 6, 4), "axial_points": 6, "axial_predicted": 5}


def test_every_planted_quirk_is_handled(synth_factory, quirky_dataset):
    """synth with every series quirk forced on (conftest's ``quirky_dataset``, read back by
    tests/test_synth_quirks.py): the converter finds exactly the stacks the manifest says were planted in
    the train split, collapses every repeated position, and loses no sample to them."""
    data = quirky_dataset
    store = synth_factory.store(data, ["--preprocess.sagittal_t2.out_px=16", "--preprocess.sagittal_t1.out_px=16",
                                       "--preprocess.axial_t2.out_px=16", "--volume_px=32"])
    rep = synth_factory.report(store)
    manifest = json.loads((data / "synth_manifest.json").read_text())
    train = [s for s in manifest["series"] if s["split"] == "train"]
    planted = {(s["study_id"], s["series_id"]): s["expected_stacks"] for s in train if s["expected_stacks"] > 1}
    assert len(planted) >= 6
    assert {(s["study_id"], s["series_id"]): s["stacks"] for s in rep["split_series"]} == planted
    assert rep["stacks"]["collapsed_duplicates"] == sum(s["repeated_positions"] for s in train) > 0
    assert set(rep["skip_reasons"]) <= {"no_coordinates"}  # levels without a slab have no coordinate row
    coords = pd.read_csv(data / "train_label_coordinates.csv")
    assert sum(c["samples"] for c in rep["counts"].values()) == len(coords)
