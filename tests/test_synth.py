"""The synthetic dataset: Kaggle layout, readable DICOMs, coordinates on the planted anatomy,
severity visible in the pixels, planted real-data quirks, determinism, and the `lsdc synth` verb.

Every geometric check reads the files back with pydicom and numpy alone (sorting slices by
ImagePositionPatient along the IOP normal), independent of the generator's own geometry code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import SEED as LOC_SEED
from conftest import STUDIES, TEST_STUDIES
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage, RLELossless

from lsdc.core.cli import main
from lsdc.core.readers import (TRAIN_COLUMNS, read_coordinates, read_sample_submission, read_series_descriptions,
                               read_train)
from lsdc.core.schema import (AX_T2, CONDITION_VIEW, CONDITIONS, GROUP_OF, LEFT_NFN, LEFT_SS, LEVELS, RIGHT_NFN,
                              RIGHT_SS, SAG_T1, SAG_T2, SEVERITIES, SPINAL, VIEW_CONDITIONS, label_column, row_id)
from lsdc.synth import labels, phantom, render
from lsdc.synth.dicom_write import to_stored
from lsdc.synth.generate import ground_truth, synth
from lsdc.synth.series import SeriesPlan, Variety

# quirks made more frequent so a 7-study dataset shows every one of them (checked below)
TEST_VARIETY = Variety(two_axial=0.35, missing_series=0.2, monochrome1=0.15, rescaled=0.25,
                       reversed_instances=0.3, rle=0.12, jpeg2000=0.08, implicit_vr=0.2)
SEED, TRAIN, TEST = 44, 5, 2
REQUIRED_TAGS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                 "SeriesDescription", "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient",
                 "PixelSpacing", "SliceThickness", "SpacingBetweenSlices", "Rows", "Columns", "BitsAllocated",
                 "BitsStored", "PixelRepresentation", "PhotometricInterpretation", "SamplesPerPixel")


# --- reading back with pydicom alone ------------------------------------------------------------
def _axes(ds):
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    x, y = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    return x, y, np.cross(x, y)


def to_patient(ds, col, row):
    x, y, _ = _axes(ds)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return np.array(ds.ImagePositionPatient, dtype=float) + col * dc * x + row * dr * y


def to_pixel(ds, point):
    """(col, row, offset along the normal) of a patient point on this slice."""
    x, y, n = _axes(ds)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    d = np.asarray(point, dtype=float) - np.array(ds.ImagePositionPatient, dtype=float)
    return d @ x / dc, d @ y / dr, d @ n


def physical(ds):
    a = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = (2 ** int(ds.BitsStored) - 1) - a
    return a * float(ds.get("RescaleSlope", 1.0)) + float(ds.get("RescaleIntercept", 0.0))


def patch(img, col, row, r=1):
    c, rr = int(round(col)), int(round(row))
    return float(img[max(rr - r, 0):rr + r + 1, max(c - r, 0):c + r + 1].mean())


@pytest.fixture(scope="module")
def dataset(synth_factory):
    # clean labels: every grade present at this size (the realistic mix is tested on its own below)
    out = synth_factory.dataset(TRAIN, SEED, TEST, labels="clean", variety=TEST_VARIETY)
    return out, synth_factory.summary(out), ground_truth(TRAIN, SEED, TEST, TEST_VARIETY, label_model="clean")


@pytest.fixture(scope="module")
def series(dataset):
    """(study_id, series_id) -> (split, description, slices sorted along the normal)."""
    out = dataset[0]
    found = {}
    for split in ("train", "test"):
        desc = pd.read_csv(out / f"{split}_series_descriptions.csv")
        for r in desc.itertuples():
            files = sorted((out / f"{split}_images" / str(r.study_id) / str(r.series_id)).glob("*.dcm"))
            dss = [pydicom.dcmread(f) for f in files]
            n = _axes(dss[0])[2]
            dss.sort(key=lambda d: float(np.array(d.ImagePositionPatient, dtype=float) @ n))
            found[(r.study_id, r.series_id)] = (split, r.series_description, dss)
    return found


def _coords_and_labels(out):
    for split, lab_name in (("train", "train.csv"), ("test", "test_labels.csv")):
        yield split, read_coordinates(out / f"{split}_label_coordinates.csv"), read_train(out / lab_name)


# --- layout -------------------------------------------------------------------------------------
def test_layout_and_readers(dataset):
    out, summary, truth = dataset
    assert {p.name for p in out.iterdir()} == {
        "train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv", "train_images",
        "test_images", "test_series_descriptions.csv", "sample_submission.csv", "test_labels.csv",
        "test_label_coordinates.csv", "synth_manifest.json", "train_oracle.csv", "test_oracle.csv"}
    for csv in out.glob("*.csv"):
        assert len(pd.read_csv(csv)) > 0, csv.name
    assert tuple(pd.read_csv(out / "train.csv").columns) == TRAIN_COLUMNS
    train, test = read_train(out / "train.csv"), read_train(out / "test_labels.csv")
    assert len(train) == TRAIN and len(test) == TEST and not set(train.study_id) & set(test.study_id)
    ids = list(train.study_id) + list(test.study_id)
    assert all(7 <= len(str(i)) <= 10 for i in ids)
    sub = read_sample_submission(out / "sample_submission.csv")
    assert len(sub) == 25 * TEST
    assert set(sub.row_id) == {row_id(s, c, lv) for s in test.study_id for c in CONDITIONS for lv in LEVELS}
    assert np.allclose(sub[["normal_mild", "moderate", "severe"]].to_numpy(), 1 / 3, atol=1e-5)
    all_series = []
    for split, labels_df in (("train", train), ("test", test)):
        desc = read_series_descriptions(out / f"{split}_series_descriptions.csv")
        assert set(desc.study_id) == set(labels_df.study_id)
        assert {p.name for p in (out / f"{split}_images").iterdir()} == {str(s) for s in labels_df.study_id}
        for r in desc.itertuples():
            sdir = out / f"{split}_images" / str(r.study_id) / str(r.series_id)
            stems = sorted(int(p.stem) for p in sdir.iterdir())
            assert [p.suffix for p in sdir.iterdir()] == [".dcm"] * len(stems)
            assert stems == list(range(1, len(stems) + 1))
        all_series += list(desc.series_id)
    assert len(set(all_series)) == len(all_series) and not set(all_series) & set(ids)
    assert summary["series"] == len(all_series) and summary["train_studies"] == TRAIN


def test_coordinate_rows_match_labels_and_views(dataset):
    out, _, truth = dataset
    for split, coords, labels_df in _coords_and_labels(out):
        desc = read_series_descriptions(out / f"{split}_series_descriptions.csv")
        view_of = dict(zip(desc.series_id, desc.view))
        assert all(CONDITION_VIEW[c] == view_of[s] for c, s in zip(coords.condition, coords.series_id))
        have = set(zip(coords.study_id, coords.condition, coords.level))
        for r in labels_df.itertuples(index=False):
            # (view, level) covered: an axial series of angled slabs covers only its slabs' levels
            covered = {(p.view, lv) for p in truth[r.study_id][2] for lv in p.levels}
            assert {v for v, _ in covered} == set(desc.view[desc.study_id == r.study_id])
            for c in CONDITIONS:
                for lv in LEVELS:
                    expected = getattr(r, label_column(c, lv)) >= 0 and (CONDITION_VIEW[c], lv) in covered
                    assert ((r.study_id, c, lv) in have) == expected


def _plan(truth, study, sid):
    return next(p for p in truth[study][2] if p.series_id == sid)


def _stack_key(ds):
    return (tuple(float(v) for v in ds.ImageOrientationPatient), ds.Rows, ds.Columns,
            tuple(float(v) for v in ds.PixelSpacing))


def test_dicom_files_load_with_required_tags(dataset, series):
    sops = set()
    for (study, sid), (split, description, dss) in series.items():
        assert len({d.SeriesInstanceUID for d in dss}) == 1 and len({d.StudyInstanceUID for d in dss}) == 1
        plan = _plan(dataset[2], study, sid)
        required = [t for t in REQUIRED_TAGS if plan.write_thickness or t not in ("SliceThickness",
                                                                                  "SpacingBetweenSlices")]
        for d in dss:
            for tag in required:
                assert tag in d, tag
            assert plan.write_thickness == ("SliceThickness" in d) == ("SpacingBetweenSlices" in d)
            assert d.SOPClassUID == MRImageStorage and d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
            assert d.Modality == "MR" and d.SeriesDescription == description
            assert d.BitsAllocated == 16 and d.PixelRepresentation == 0 and d.SamplesPerPixel == 1
            assert Path(d.filename).name == f"{d.InstanceNumber}.dcm"
            px = d.pixel_array
            assert px.dtype == np.uint16 and px.shape == (d.Rows, d.Columns)
            sops.add(d.SOPInstanceUID)
        # the main stack(s): planted odd-geometry slices and repeated positions aside
        main = set(int(plan.instance_numbers[k]) for k in plan.label_slices())
        assert len(main) + plan.odd.sum() + len(plan.repeated_instances) == len(dss)
        heads = [d for d in dss if d.InstanceNumber in main]
        spacing = [float(v) for d in heads for v in d.PixelSpacing]
        iops = {tuple(float(v) for v in d.ImageOrientationPatient) for d in heads}
        if description.startswith("Sagittal"):
            assert iops == {(0, 1, 0, 0, 0, -1)}
            assert 15 <= len(heads) <= 25 and all(0.5 <= s <= 0.9 for s in spacing)
        elif plan.angled_slabs:  # one orientation per slab
            assert len(iops) == plan.angled_slabs and 4 * len(iops) <= len(heads) <= 8 * len(iops)
            assert all(0.6 <= s <= 0.9 for s in spacing)
        else:
            assert len(iops) == 1 and list(iops.pop())[:3] == [1, 0, 0]
            assert 20 <= len(heads) <= 60 and all(0.6 <= s <= 0.9 for s in spacing)
        assert all(256 <= max(d.Rows, d.Columns) <= 640 for d in heads)
    assert len(sops) == sum(len(v[2]) for v in series.values())


# --- geometry: every coordinate row lands on its planted structure ------------------------------
def test_coordinates_land_on_planted_landmarks(dataset, series):
    out, _, truth = dataset
    checked = 0
    for split, coords, _ in _coords_and_labels(out):
        for r in coords.itertuples():
            _, _, dss = series[(r.study_id, r.series_id)]
            mark = truth[r.study_id][1].landmark(r.condition, r.level)
            k = [d.InstanceNumber for d in dss].index(r.instance_number)
            # among the slices of its stack (an angled slab has an orientation of its own; planted
            # odd-geometry slices are stacks of their own); a repeated position ties with its original
            stack = [d for d in dss if _stack_key(d) == _stack_key(dss[k])]
            offsets = [abs(to_pixel(d, mark)[2]) for d in stack]
            assert abs(to_pixel(dss[k], mark)[2]) <= min(offsets) + 1e-6, "not the spatially nearest slice"
            ds = _plan(truth, r.study_id, r.series_id).slice_spacing_mm
            assert "SpacingBetweenSlices" not in dss[k] or float(dss[k].SpacingBetweenSlices) == ds
            assert min(offsets) <= ds / 2 + 1e-3
            p = to_patient(dss[k], r.x, r.y)
            _, _, n = _axes(dss[k])
            d = p - mark
            assert np.linalg.norm(d - (d @ n) * n) < 0.5, (r.condition, r.level, d)
            checked += 1
        # patient left is +x: on axials (IOP [1,0,0,...]) a larger column, on sagittals a lower index
        # only through the stack order, so compare patient x of left vs right foramina instead
        for (study, lv), g in coords.groupby(["study_id", "level"]):
            by = {c: row for c, row in zip(g.condition, g.itertuples())}
            if LEFT_SS in by and RIGHT_SS in by and by[LEFT_SS].series_id == by[RIGHT_SS].series_id:
                assert by[LEFT_SS].x > by[RIGHT_SS].x
            if LEFT_NFN in by and RIGHT_NFN in by:
                _, _, dss = series[(study, by[LEFT_NFN].series_id)]
                inst = [d.InstanceNumber for d in dss]
                xl = to_patient(dss[inst.index(by[LEFT_NFN].instance_number)], 0, 0)[0]
                xr = to_patient(dss[inst.index(by[RIGHT_NFN].instance_number)], 0, 0)[0]
                assert xl > xr + 15
    assert checked > 100


def _canal_ref_and_width(ds, truth_anat, level, col, row):
    """CSF reference (canal at mid-body above the disc) and the CSF-bright run (mm) through (col, row)
    along the row, i.e. antero-posteriorly on a sagittal slice."""
    img = physical(ds)
    up = truth_anat.disc_axes[level][2]
    ref_pt = truth_anat.landmark(SPINAL, level) + 18 * up
    rc, rr, _ = to_pixel(ds, ref_pt)
    ref = patch(img, rc, rr)
    r0 = int(round(row))
    line = img[r0 - 1:r0 + 2].mean(axis=0) > 0.5 * ref
    dc = float(ds.PixelSpacing[1])
    c0 = int(round(col))
    near = [c for c in range(c0 - int(3 / dc), c0 + int(3 / dc) + 1) if 0 <= c < len(line) and line[c]]
    if not near:
        return ref, img, 0.0
    c = min(near, key=lambda v: abs(v - c0))
    lo = hi = c
    while lo > 0 and line[lo - 1]:
        lo -= 1
    while hi < len(line) - 1 and line[hi + 1]:
        hi += 1
    return ref, img, (hi - lo + 1) * dc


def test_sagittal_t2_canal_is_csf_bright_and_narrows_with_severity(dataset, series):
    out, _, truth = dataset
    widths = {0: [], 1: [], 2: []}
    for split, coords, labels_df in _coords_and_labels(out):
        lab = labels_df.set_index("study_id")
        for r in coords[coords.condition == SPINAL].itertuples():
            _, _, dss = series[(r.study_id, r.series_id)]
            ds = dss[[d.InstanceNumber for d in dss].index(r.instance_number)]
            anat = truth[r.study_id][1]
            grade = int(lab.loc[r.study_id, label_column(SPINAL, r.level)])
            ref, img, width = _canal_ref_and_width(ds, anat, r.level, r.x, r.y)
            widths[grade].append(width)
            if grade == 0:  # CSF at the labelled point vs the vertebral body just above the disc
                body = anat.disc_centres[r.level] + 18 * anat.disc_axes[r.level][2]
                bc, br, _ = to_pixel(ds, body)
                assert patch(img, r.x, r.y) > 1.5 * patch(img, bc, br)
    means = {g: np.mean(w) for g, w in widths.items()}
    assert all(len(w) >= 2 for w in widths.values()), {g: len(w) for g, w in widths.items()}
    assert means[0] > means[1] > means[2] and means[0] - means[2] > 5.0, means


# --- planted quirks -----------------------------------------------------------------------------
def test_variety_present(dataset, series):
    out = dataset[0]
    heads = [(k, v[1], v[2]) for k, v in series.items()]
    assert any(d[0].PhotometricInterpretation == "MONOCHROME1" for _, _, d in heads)
    assert any(float(d[0].get("RescaleSlope", 1)) != 1 for _, _, d in heads)
    assert any(d[0].InstanceNumber > d[-1].InstanceNumber for _, _, d in heads)  # reversed numbering
    syntaxes = {d[0].file_meta.TransferSyntaxUID for _, _, d in heads}
    assert {ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless} <= syntaxes
    for split, coords, labels_df in _coords_and_labels(out):
        desc = read_series_descriptions(out / f"{split}_series_descriptions.csv")
        per_study = desc.groupby("study_id").view.apply(list)
        for study, views in per_study.items():
            if views.count(AX_T2) == 2:  # both axial series carry subarticular rows
                ss = coords[(coords.study_id == study) & coords.condition.isin([LEFT_SS, RIGHT_SS])]
                assert ss.series_id.nunique() == 2
            missing = {SAG_T1, SAG_T2, AX_T2} - set(views)
            for view in missing:  # labels stay, coordinate rows go
                lab = labels_df.set_index("study_id").loc[study]
                conds = VIEW_CONDITIONS[view]
                assert (lab[[label_column(c, lv) for c in conds for lv in LEVELS]] >= 0).sum() > 0
                assert not coords[(coords.study_id == study) & coords.condition.isin(conds)].shape[0]
    counts = pd.read_csv(out / "train_series_descriptions.csv").groupby("study_id").size()
    assert (counts == 4).any() and (counts == 2).any(), "two-axial and missing-series studies"


def test_stored_values_decode_to_physical():
    phys = np.random.default_rng(0).uniform(0, 3000, (8, 8))
    plan = SeriesPlan(1, SAG_T2, "T2", 8, 8, (1, 1), (0, 1, 0, 0, 0, -1), np.zeros((1, 3)), np.array([1]), 3, 3)
    plan.slope, plan.intercept, plan.bits_stored = 2.5, -120.0, 12
    stored = to_stored(plan, phys)
    assert stored.dtype == np.uint16 and np.abs(stored * 2.5 - 120 - phys).max() <= 1.25 + 1e-9
    plan.slope, plan.intercept, plan.photometric = 1.0, 0.0, "MONOCHROME1"
    assert np.array_equal(4095 - to_stored(plan, phys).astype(int), np.rint(phys).astype(int))


# --- determinism and the CLI --------------------------------------------------------------------
def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_any_workers(tmp_path):
    synth(tmp_path / "a", 1, 7, 1, workers=1)
    synth(tmp_path / "b", 1, 7, 1, workers=2)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    synth(tmp_path / "c", 1, 8, 1, workers=1)
    c = _tree(tmp_path / "c")
    assert c["train.csv"] != a["train.csv"] and c["train_label_coordinates.csv"] != a["train_label_coordinates.csv"]


def test_cli_writes_dataset_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["synth", str(out), "--studies", "1", "--seed", "3", "--workers", "1"]) == 0
    assert "wrote 1 train" in capsys.readouterr().out
    assert (out / "train.csv").is_file() and not (out / "sample_submission.csv").exists()
    for argv in (["synth", str(tmp_path / "e"), "--studies", "0"],
                 ["synth", str(out), "--studies", "1"],
                 ["synth", str(tmp_path / "f"), "--studies", "1", "--workers", "0"],
                 ["synth", str(tmp_path / "g"), "--studies", "1", "--test-studies", "-1"],
                 ["synth", str(tmp_path / "h"), "--studies", "1", "--seed", "-3"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lsdc synth: error:") and "Traceback" not in err[0]
    assert not (tmp_path / "e").exists()


# --- the label model, the phantom, the renderer -------------------------------------------------
REAL_MIX = {"spinal": (0.878, 0.075, 0.048), "foraminal": (0.780, 0.181, 0.040), "subarticular": (0.714, 0.190, 0.096)}


def _cells(model: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [labels.sample_cells(rng, model) for _ in range(n)]


def test_realistic_labels_have_the_real_mix_where_the_real_data_has_it():
    cells = _cells("realistic", 3000)
    grade = np.stack([c.grade for c in cells])  # (n, 5, 5)
    exact = labels.expected_mix("realistic")
    for group, mix in REAL_MIX.items():
        rows = [i for i, c in enumerate(CONDITIONS) if GROUP_OF[c] == group]
        frac = np.bincount(grade[:, rows].ravel(), minlength=3) / grade[:, rows].size
        assert np.allclose(exact["group"][group], mix, atol=0.002), group  # solved exactly
        assert np.allclose(frac, mix, atol=0.015), (group, frac)  # and sampled so
    severe = exact["cell"][..., 2]  # severe where the real data has it
    spinal, foraminal, ss = severe[0], severe[1], severe[3]
    assert spinal[3] > spinal[2] > spinal[4] and foraminal[4] > foraminal[2] and foraminal[3] > foraminal[2]
    assert ss.argmax() == 3 and 0.18 < ss[3] < 0.28
    blanks = np.stack([labels.sample_blanks(np.random.default_rng(k)) for k in range(4000)])
    assert 0.008 < blanks.mean() < 0.016
    ss_rows = [CONDITIONS.index(LEFT_SS), CONDITIONS.index(RIGHT_SS)]
    assert 0.06 < blanks[:, ss_rows, 0].mean() < 0.10 and 0.025 < blanks[:, ss_rows, 1].mean() < 0.055


def test_realistic_narrowing_is_smooth_in_the_latent_and_grades_carry_reader_noise():
    cells = _cells("realistic", 2000, seed=1)
    s = np.stack([c.latent for c in cells]).ravel()
    nar = np.stack([c.narrowing for c in cells]).ravel()
    grade = np.stack([c.grade for c in cells]).ravel()
    post = np.stack([c.posterior for c in cells]).reshape(-1, 3)
    for i in range(len(CONDITIONS)):  # increasing in s, per condition (each has its own cut-points)
        s_c = np.stack([c.latent[i] for c in cells]).ravel()
        n_c = np.stack([c.narrowing[i] for c in cells]).ravel()
        assert np.all(np.diff(n_c[np.argsort(s_c)]) >= -1e-12), CONDITIONS[i]
    assert np.corrcoef(s, nar)[0, 1] > 0.9
    assert len(np.unique(nar.round(3))) > 500  # a continuum, not three steps
    for g in range(3):  # a grade spans a range of narrowing that overlaps its neighbours (reader noise)
        assert nar[grade == g].std() > 0.03
    assert nar[grade == 1].min() < nar[grade == 0].max()
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-9)
    for g in range(3):  # the posterior is calibrated: mean P(g | s) matches how often g was written
        assert abs(post[:, g].mean() - (grade == g).mean()) < 0.01
    tilted = labels.oracle_submission(post[:5])
    w = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(tilted, post[:5] * w / (post[:5] * w).sum(axis=1, keepdims=True))


def test_clean_labels_keep_the_separable_mix():
    cells = _cells("clean", 4000)
    sev = np.stack([c.grade for c in cells])
    frac = np.bincount(sev.ravel(), minlength=3) / sev.size
    assert np.allclose(frac, labels.expected_mix("clean")["overall"], atol=0.015), frac
    assert np.allclose(frac, (0.668, 0.204, 0.127), atol=0.02)
    nar = np.stack([c.narrowing for c in cells[:200]])
    for g, (lo, hi) in enumerate(labels.CLEAN_NARROWING):
        assert lo - 0.08 <= nar[sev[:200] == g].min() and nar[sev[:200] == g].max() <= hi + 0.08
    assert np.array_equal(np.stack([c.posterior for c in cells[:50]]).argmax(-1), sev[:50])


def test_synth_train_csv_has_the_real_mix_and_an_oracle(synth_factory):
    """The label frequencies of train.csv are within 5 points of the real table per condition group
    (60 studies' labels, drawn exactly as synth draws them but without rendering), and synth writes
    an oracle submission per split that scores better than the best constant (on the session's realistic
    localiser dataset, conftest's 30 + 4 studies)."""
    from lsdc.metric.baselines import score_report
    from lsdc.synth.generate import build_study, make_jobs
    grades = {g: [] for g in REAL_MIX}
    for job in make_jobs("", 60, 0):
        anat, blank, *_ = build_study(job)
        for i, c in enumerate(CONDITIONS):
            grades[GROUP_OF[c]] += [int(g) for g, b in zip(anat.severity[i], blank[i]) if not b]
    for group, mix in REAL_MIX.items():
        frac = np.bincount(grades[group], minlength=3) / len(grades[group])
        assert np.all(np.abs(frac - mix) < 0.05), (group, frac)
    out = synth_factory.dataset(STUDIES, LOC_SEED, TEST_STUDIES)
    for split, name in (("train", "train.csv"), ("test", "test_labels.csv")):
        oracle = pd.read_csv(out / f"{split}_oracle.csv")
        assert list(oracle.columns) == ["row_id", "normal_mild", "moderate", "severe"]
        assert len(oracle) == 25 * (STUDIES if split == "train" else TEST_STUDIES)
        np.testing.assert_allclose(oracle[["normal_mild", "moderate", "severe"]].sum(axis=1), 1.0, atol=1e-6)
    rep = score_report(out / "test_labels.csv", out / "test_oracle.csv", prior_from=out / "train.csv",
                       oracle=out / "test_oracle.csv")
    assert rep["skill"] == pytest.approx(1.0) and rep["ceiling"] < rep["prior"]


def test_phantom_landmarks_are_anatomical():
    for seed in range(5):
        a = phantom.make_study(seed)
        z = [a.landmark(SPINAL, lv)[2] for lv in LEVELS]
        assert all(25 < z0 - z1 < 50 for z0, z1 in zip(z[:-1], z[1:]))  # L1/L2 on top, level gaps
        for lv in LEVELS:
            c = a.landmark(SPINAL, lv)
            for left, right, lo, hi in ((LEFT_NFN, RIGHT_NFN, 12, 24), (LEFT_SS, RIGHT_SS, 6, 11)):
                dl, dr = a.landmark(left, lv)[0] - c[0], c[0] - a.landmark(right, lv)[0]
                assert lo < dl < hi and lo < dr < hi, (lv, left, dl, dr)
        assert a.severity.shape == (5, 5) and a.grade(SPINAL, "l4_l5") in (0, 1, 2)


def test_aligned_sampling_equals_trilinear():
    a = phantom.make_study(1)
    vol = render.paint(a, ("T2",))
    c = a.landmark(SPINAL, "l3_l4")
    for iop, sp in (((0, 1, 0, 0, 0, -1), (0.8, 0.75)), ((1, 0, 0, 0, 0.98, 0.198997), (0.7, 0.7))):
        x, y = np.array(iop[:3]), np.array(iop[3:])
        ipp = c - x * 60 - y * 50 + 0.37
        slab = render.slab(vol, "T2", iop, 3.5)
        fast = render._sample_aligned(vol, slab, int(np.argmax(np.abs(x))), ipp, iop, sp, 150, 160)
        slow = render._sample_general(vol, slab, ipp, iop, sp, 150, 160)
        assert all(np.abs(f - s).max() < 1e-4 for f, s in zip(fast, slow))


def test_severity_names_come_from_schema(dataset):
    values = set(pd.read_csv(dataset[0] / "train.csv", dtype=str, keep_default_na=False).iloc[:, 1:].stack())
    assert values <= set(SEVERITIES) | {""}


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_encodings_are_lossless(tmp_path, syntax, photometric):
    from lsdc.synth.dicom_write import write_series
    rng = np.random.default_rng(1)
    plan = SeriesPlan(123, AX_T2, "T2", 80, 64, (0.7, 0.7), (1, 0, 0, 0, 1, 0),
                      np.array([[0, 0, 0], [0, 0, 4.0]]), np.array([2, 1]), 4, 4)
    plan.transfer_syntax, plan.photometric = syntax, photometric
    stored = [rng.integers(0, 4096, (80, 64)).astype(np.uint16) for _ in range(2)]  # J2K needs >= ~64 px
    paths = write_series(plan, stored, tmp_path / "s", seed=0, study_id=99, description="Axial T2")
    for path, px, inst in zip(paths, stored, (2, 1)):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == syntax and ds.InstanceNumber == inst and path.name == f"{inst}.dcm"
        assert ds.PhotometricInterpretation == photometric and np.array_equal(ds.pixel_array, px)
