"""The real data's series quirks that `lsdc synth` plants, read back from the files with pydicom alone,
and the manifest that lists them: angled per-level axial slabs, odd-geometry slices, repeated
positions, repeated / missing series types, omitted thickness tags; determinism; default rates.

A reader that groups slices by (orientation, matrix, pixel spacing) and splits each group at position
gaps > 1.5x its median spacing (:func:`_stacks`) must find the manifest's ``expected_stacks``.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import QUIRKY, QUIRKY_SEED, QUIRKY_STUDIES, QUIRKY_TEST_STUDIES

from lsdc.core.readers import read_coordinates, read_series_descriptions, read_train
from lsdc.core.schema import AX_T2, CONDITION_VIEW, LEFT_SS, LEVELS, RIGHT_SS, SAG_T1, SAG_T2, VIEWS, label_column
from lsdc.synth.generate import ground_truth, manifest, synth
from lsdc.synth.series import MIN_SLAB_ANGLE_DEG

SEED, TRAIN, TEST = QUIRKY_SEED, QUIRKY_STUDIES, QUIRKY_TEST_STUDIES  # 3, 3, 1: conftest's ``quirky_dataset``
SERIES_KEYS = ["study_id", "series_id", "split", "view", "angled_slabs", "odd_slices", "odd_kind",
               "repeated_positions", "repeated_instances", "expected_stacks"]
STUDY_KEYS = ["study_id", "split", "repeated_view", "missing_view", "two_axial"]


# --- an independent stack reader ----------------------------------------------------------------
def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _normal(iop):
    return _unit(np.cross(_unit(iop[:3]), _unit(iop[3:])))


def _angle(a, b):
    return float(np.degrees(np.arccos(np.clip(abs(np.dot(_unit(a), _unit(b))), -1, 1))))


def _stacks(slices, tol_deg=1.0):
    """Geometric stacks of (iop, rows, cols, spacing, ipp) slices: same orientation (both image axes
    within ``tol_deg``), matrix and spacing; split at gaps > 1.5x the median gap along the normal.
    Returns lists of slice indices, each sorted along its normal."""
    groups = []
    for i, (iop, rows, cols, sp, _) in enumerate(slices):
        for g in groups:
            iop0, rows0, cols0, sp0, _ = slices[g[0]]
            if ((rows, cols) == (rows0, cols0) and np.allclose(sp, sp0, atol=1e-6)
                    and _angle(iop[:3], iop0[:3]) < tol_deg and _angle(iop[3:], iop0[3:]) < tol_deg):
                g.append(i)
                break
        else:
            groups.append([i])
    out = []
    for g in groups:
        n = _normal(slices[g[0]][0])
        z = np.array([np.dot(slices[i][4], n) for i in g])
        order = [g[j] for j in np.argsort(z, kind="stable")]
        gaps = np.diff(np.sort(z))
        cut = [j + 1 for j in np.flatnonzero(gaps > 1.5 * np.median(gaps))] if len(gaps) else []
        out += [order[a:b] for a, b in zip([0] + cut, cut + [len(order)])]
    return out


def _geom(d):
    return (tuple(float(v) for v in d.ImageOrientationPatient), int(d.Rows), int(d.Columns),
            tuple(float(v) for v in d.PixelSpacing), np.array(d.ImagePositionPatient, dtype=float))


def _plan_slices(plan):
    return [(tuple(plan.iops[k]), int(plan.matrices[k][0]), int(plan.matrices[k][1]), tuple(plan.spacings[k]),
             plan.ipps[k]) for k in range(plan.n)]


def _offset(d, point):
    g = _geom(d)
    return float(np.dot(np.asarray(point, float) - g[4], _normal(g[0])))


def _pixel(d, point):
    g = _geom(d)
    x, y = _unit(g[0][:3]), _unit(g[0][3:])
    v = np.asarray(point, float) - g[4]
    return v @ x / g[3][1], v @ y / g[3][0]


# --- the rendered dataset -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(synth_factory, quirky_dataset):
    out = quirky_dataset
    summary = synth_factory.summary(out)
    files = {}
    for split in ("train", "test"):
        for r in read_series_descriptions(out / f"{split}_series_descriptions.csv").itertuples():
            sdir = out / f"{split}_images" / str(r.study_id) / str(r.series_id)
            dss = [pydicom.dcmread(p) for p in sdir.glob("*.dcm")]
            files[(r.study_id, r.series_id)] = sorted(dss, key=lambda d: d.InstanceNumber)
    coords = pd.concat([read_coordinates(out / f"{s}_label_coordinates.csv") for s in ("train", "test")])
    man = json.loads((out / "synth_manifest.json").read_text())
    return {"out": out, "summary": summary, "files": files, "coords": coords, "manifest": man,
            "entry": {(e["study_id"], e["series_id"]): e for e in man["series"]},
            "truth": ground_truth(TRAIN, SEED, TEST, QUIRKY)}


def _main_slices(dss, entry):
    """The slices of the main stack(s): no odd-geometry slice, no repeated copy."""
    copies = set(entry["repeated_instances"])
    keep = [d for d in dss if d.InstanceNumber not in copies]
    if entry["odd_slices"]:
        common = Counter((d.Rows, d.Columns, tuple(d.PixelSpacing)) for d in keep).most_common(1)[0][0]
        keep = [d for d in keep if (d.Rows, d.Columns, tuple(d.PixelSpacing)) == common]
    return keep


def _slabs(dss):
    """IOP -> slices of that orientation, each list sorted along its normal."""
    out = {}
    for d in dss:
        out.setdefault(_geom(d)[0], []).append(d)
    return {iop: sorted(v, key=lambda d: float(np.dot(_geom(d)[4], _normal(iop)))) for iop, v in out.items()}


def test_manifest_lists_every_series_and_is_a_function_of_the_plan(data):
    man, out, summary = data["manifest"], data["out"], data["summary"]
    assert list(man) == ["series", "studies"]
    assert all(list(e) == SERIES_KEYS for e in man["series"]) and all(list(e) == STUDY_KEYS for e in man["studies"])
    assert set(data["entry"]) == set(data["files"]) and len(man["series"]) == len(data["files"])
    studies = {e["study_id"]: e for e in man["studies"]}
    for split in ("train", "test"):
        desc = read_series_descriptions(out / f"{split}_series_descriptions.csv")
        assert {s for s, e in studies.items() if e["split"] == split} == set(desc.study_id)
        for r in desc.itertuples():
            e = data["entry"][(r.study_id, r.series_id)]
            assert e["split"] == split and e["view"] == r.view
    assert man == manifest(TRAIN, SEED, TEST, QUIRKY)  # planning alone reproduces it
    ents = man["series"]
    assert summary["angled_series"] == sum(e["angled_slabs"] > 0 for e in ents) > 0
    assert summary["odd_matrix_series"] == sum(e["odd_slices"] > 0 for e in ents) == len(ents)
    assert summary["repeated_position_series"] == len(ents)
    assert summary["split_series"] == sum(e["expected_stacks"] > 1 for e in ents) == len(ents)
    assert {e["odd_kind"] for e in ents} == {"matrix", "spacing"}
    for e in ents:
        assert e["expected_stacks"] == max(e["angled_slabs"], 1) + (e["odd_slices"] > 0)
        assert len(e["repeated_instances"]) == e["repeated_positions"] == 1 and 1 <= e["odd_slices"] <= 2
        assert (e["angled_slabs"] > 0) == (e["view"] == AX_T2)


def test_expected_stacks_match_a_grouping_reader(data):
    for key, dss in data["files"].items():
        e = data["entry"][key]
        stacks = _stacks([_geom(d) for d in dss])
        assert len(stacks) == e["expected_stacks"], (key, e)
        for tol in (0.05, 2.5):  # a strict and a loose orientation tolerance agree
            assert len(_stacks([_geom(d) for d in dss], tol)) == e["expected_stacks"]


def _angled_series(data):
    """(study id, series id, its DICOM datasets, manifest entry, anatomy, plans, plan) of every angled series."""
    for (study, sid), dss in data["files"].items():
        e = data["entry"][(study, sid)]
        if e["angled_slabs"]:
            anat, plans = data["truth"][study][1:]
            yield study, sid, dss, e, anat, plans, next(p for p in plans if p.series_id == sid)


def test_angled_slabs_follow_their_discs(data):
    seen = set()
    for study, sid, dss, e, anat, plans, plan in _angled_series(data):
        main = _main_slices(dss, e)
        slabs = _slabs(main)
        k = e["angled_slabs"]
        assert len(slabs) == k and (3 <= k <= 5 or k == len(plan.levels) == 2)
        normals = [_normal(iop) for iop in slabs]
        assert min(_angle(a, b) for i, a in enumerate(normals) for b in normals[i + 1:]) >= MIN_SLAB_ANGLE_DEG - 1e-6
        levels = []
        copies = {d.InstanceNumber for d in dss} - {d.InstanceNumber for d in main}
        for iop, sl in slabs.items():
            n = _normal(iop)
            assert 4 <= len(sl) <= 8
            # the slab's disc: the one its middle is closest to; parallel to it, centred on it
            mid = np.mean([_geom(d)[4] for d in sl], axis=0) @ n
            lv = min(LEVELS, key=lambda v: abs(anat.disc_centres[v] @ n - mid))
            levels.append(lv)
            assert _angle(n, anat.disc_axes[lv][2]) < 3.5
            assert abs(anat.disc_centres[lv] @ n - mid) < 0.01
            seen.add(round(float(np.degrees(np.arcsin(n[1]))), 0))
            # instance numbers of the slab run contiguously (a repeated copy may be inserted among them)
            inst = sorted(d.InstanceNumber for d in sl)
            with_copies = sorted(inst + [c for c in copies if c - 1 in inst])
            assert inst == list(range(inst[0], inst[0] + len(inst))) or \
                with_copies == list(range(with_copies[0], with_copies[0] + len(with_copies)))
        assert len(set(levels)) == k and tuple(lv for lv in LEVELS if lv in levels) == plan.levels
        assert "".join("x" if lv in levels else "." for lv in LEVELS).strip(".") == "x" * k  # contiguous
        if sum(p.view == AX_T2 for p in plans) == 1:
            assert plan.levels == LEVELS[-k:]  # the k lowest levels
    assert max(seen) - min(seen) >= 10  # the slabs really tilt


def test_subarticular_rows_point_into_their_levels_slab(data):
    coords, n = data["coords"], 0
    labels = pd.concat([read_train(data["out"] / f) for f in ("train.csv", "test_labels.csv")]).set_index("study_id")
    for study, sid, dss, e, anat, plans, plan in _angled_series(data):
        slabs = _slabs(_main_slices(dss, e))
        by_inst = {d.InstanceNumber: d for d in dss}
        rows = coords[(coords.series_id == sid)]
        assert set(rows.condition) <= {LEFT_SS, RIGHT_SS}
        for cond in (LEFT_SS, RIGHT_SS):
            for lv in LEVELS:
                row = rows[(rows.condition == cond) & (rows.level == lv)]
                labelled = labels.loc[study, label_column(cond, lv)] >= 0
                assert len(row) == (labelled and lv in plan.levels)
                if not len(row):
                    continue
                r = row.iloc[0]
                d = by_inst[int(r.instance_number)]
                mark = anat.landmark(cond, lv)
                # the slab of this level: the one whose middle is nearest the level's disc
                slab = min(slabs.values(), key=lambda sl: abs(_offset(sl[0], anat.disc_centres[lv])
                                                              - _offset(sl[0], np.mean([_geom(o)[4] for o in sl], 0))))
                assert any(o is d for o in slab), (cond, lv, "not in its level's slab")
                assert abs(_offset(d, mark)) == min(abs(_offset(o, mark)) for o in slab)
                assert abs(_offset(d, mark)) <= float(plan.slice_spacing_mm) / 2 + 1e-3
                col, rw = _pixel(d, mark)
                assert 0 <= r.x <= d.Columns - 1 and 0 <= r.y <= d.Rows - 1
                assert abs(col - r.x) <= 0.051 and abs(rw - r.y) <= 0.051
                n += 1
    assert n >= 10


def test_odd_slices_have_another_geometry_past_the_far_end(data):
    coords = data["coords"]
    for key, dss in data["files"].items():
        e = data["entry"][key]
        main = _main_slices(dss, e)
        skip = set(e["repeated_instances"]) | {m.InstanceNumber for m in main}
        odd = [d for d in dss if d.InstanceNumber not in skip]
        assert len(odd) == e["odd_slices"]
        ref = main[0]
        for d in odd:
            if e["odd_kind"] == "matrix":
                assert (d.Rows, d.Columns) != (ref.Rows, ref.Columns) and d.PixelSpacing == ref.PixelSpacing
            else:
                assert (d.Rows, d.Columns) == (ref.Rows, ref.Columns) and d.PixelSpacing != ref.PixelSpacing
            assert d.InstanceNumber > max(m.InstanceNumber for m in main)
        # same orientation as the stack they continue, at its slice spacing, beyond its far end
        iop = _geom(odd[0])[0]
        n = _normal(iop)
        stack = sorted((m for m in main if _geom(m)[0] == iop), key=lambda m: _geom(m)[4] @ n)
        assert stack, "odd slices continue a stack of their own orientation"
        z = sorted(_geom(d)[4] @ n for d in odd)
        ds = np.median(np.diff([_geom(m)[4] @ n for m in stack]))
        assert np.allclose(np.diff([_geom(stack[-1])[4] @ n] + z), ds, atol=2e-3)
        assert not set(coords[coords.series_id == key[1]].instance_number) & {d.InstanceNumber for d in odd}


def test_repeated_positions_share_a_position_and_rows_keep_the_original(data):
    coords, on_labelled = data["coords"], 0
    for key, dss in data["files"].items():
        e = data["entry"][key]
        by_inst = {d.InstanceNumber: d for d in dss}
        assert sorted(by_inst) == list(range(1, len(dss) + 1))
        labelled = set(coords[coords.series_id == key[1]].instance_number)
        for c in e["repeated_instances"]:
            copy = by_inst[c]
            twins = [d for d in dss if d.InstanceNumber != c and _geom(d)[0] == _geom(copy)[0]
                     and np.array_equal(_geom(d)[4], _geom(copy)[4])]
            assert len(twins) == 1, "exactly one original at the same ImagePositionPatient"
            orig = twins[0]
            assert (orig.Rows, orig.Columns, orig.PixelSpacing) == (copy.Rows, copy.Columns, copy.PixelSpacing)
            a, b = orig.pixel_array.astype(float), copy.pixel_array.astype(float)
            assert not np.array_equal(a, b) and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8  # fresh noise
            assert c not in labelled
            on_labelled += orig.InstanceNumber in labelled
    assert on_labelled >= 1  # some repeats duplicate a labelled slice; its row keeps the original


def test_repeated_and_missing_series_types(data):
    out, coords = data["out"], data["coords"]
    studies = {e["study_id"]: e for e in data["manifest"]["studies"]}
    kinds = Counter()
    for split in ("train", "test"):
        desc = read_series_descriptions(out / f"{split}_series_descriptions.csv")
        for study, g in desc.groupby("study_id", sort=False):
            s = studies[study]
            views = list(g.view)
            counts = Counter(views)
            assert s["missing_view"] is None and set(views) == set(VIEWS)
            assert s["two_axial"] == (counts[AX_T2] == 2)
            assert [v for v, c in counts.items() if c == 2] == ([s["repeated_view"]] if s["repeated_view"] else [])
            kinds[s["repeated_view"]] += 1
            if s["repeated_view"] in (SAG_T1, SAG_T2):  # labels go to the first series of the view
                first, second = list(g.series_id[g.view == s["repeated_view"]])
                rows = coords[coords.study_id == study]
                rows = rows[[CONDITION_VIEW[c] == s["repeated_view"] for c in rows.condition]]
                assert len(rows) and set(rows.series_id) == {first}
    assert kinds[AX_T2] and (kinds[SAG_T1] + kinds[SAG_T2])


def test_thickness_tags_omitted_together(data):
    written = Counter()
    for (study, sid), dss in data["files"].items():
        plan = next(p for p in data["truth"][study][2] if p.series_id == sid)
        for d in dss:
            assert ("SliceThickness" in d) == ("SpacingBetweenSlices" in d) == plan.write_thickness
        written[plan.write_thickness] += 1
    assert written[True] and written[False]


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_manifest_any_workers(data, tmp_path):
    other = 2 if data["summary"]["workers"] == 1 else 1  # the shared copy may have been written by another module
    s = synth(tmp_path / "b", TRAIN, SEED, TEST, workers=other, variety=QUIRKY)
    a, b = _tree(data["out"]), _tree(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert {k: v for k, v in s.items() if k not in ("out_dir", "seconds", "workers")} == \
        {k: v for k, v in data["summary"].items() if k not in ("out_dir", "seconds", "workers")}


# --- plans alone: many studies, cheap -----------------------------------------------------------
def test_planned_geometry_over_many_studies():
    """Without rendering: the stack reader finds expected_stacks on every planned series, slabs are
    distinct and parallel to their discs, and every coordinate row sits in its level's slab."""
    truth = ground_truth(30, 11, 0, QUIRKY)
    tilts = []
    for study, (_, anat, plans) in truth.items():
        for plan in plans:
            assert len(_stacks(_plan_slices(plan))) == plan.expected_stacks
            if plan.angled_slabs:
                iops = {tuple(v) for v in plan.iops[~plan.odd]}
                assert len(iops) == plan.angled_slabs
                for lv, j in plan.level_stacks.items():
                    n = _normal(plan.iops[plan.stack_ids == j][0])
                    assert _angle(n, anat.disc_axes[lv][2]) < 3.5
                    tilts.append(np.degrees(np.arcsin(n[1])))
                    k, _, _ = plan.nearest_slice(anat.landmark(LEFT_SS, lv), lv)
                    assert plan.stack_ids[k] == j and not plan.odd[k] and plan.copy_of[k] < 0
    assert min(tilts) < -12 and max(tilts) > 0, (min(tilts), max(tilts))  # L5/S1 steep, upper ones flat


def test_default_rates():
    m = manifest(120, 5)
    series, studies = m["series"], m["studies"]
    axial = [e for e in series if e["view"] == AX_T2]
    angled = sum(e["angled_slabs"] > 0 for e in axial) / len(axial)
    assert 0.2 < angled < 0.47, angled
    assert all(3 <= e["angled_slabs"] <= 5 for e in axial if e["angled_slabs"] and not
               next(s for s in studies if s["study_id"] == e["study_id"])["two_axial"])
    repeated = sum(s["repeated_view"] is not None for s in studies) / len(studies)
    assert 0.07 < repeated < 0.27, repeated
    assert sum(s["missing_view"] is not None for s in studies) / len(studies) < 0.14
    assert sum(e["odd_slices"] > 0 for e in series) / len(series) < 0.09
    assert sum(e["repeated_positions"] > 0 for e in series) / len(series) < 0.07
    for e in series:
        assert e["expected_stacks"] == max(e["angled_slabs"], 1) + (e["odd_slices"] > 0)
