"""Sagittal keypoints -> axial points, through the DICOM geometry (patient mm, LPS).

Subarticular points are not localised on the axial images: each is the study's spinal canal point at
that level plus a learned offset, expressed in a spine-aligned frame so it follows the lordosis:

    superior  from the canal point of the nearest level below to that of the nearest level above
    lateral   patient left (+x) made orthogonal to superior
    posterior superior x lateral

The offset table is the mean, over training studies, of (landmark - anchor) in that frame, per level
(and side). Anchors: the canal point (subarticular), and, for a study without its Sagittal T2 series,
the midpoint of the two foramina (canal = midpoint + its own learned offset). The patient point is
then projected into every stack of every axial series of the study (a series of angled per-level slabs
has one stack per slab; see lsdc.preprocess.stacks): the stack whose slab contains it wins, and in it
the slice whose plane is nearest, with its pixel (col, row) from the slice geometry, read from headers
only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.schema import LEFT, LEFT_NFN, LEFT_SS, LEVELS, RIGHT, RIGHT_NFN, RIGHT_SS, SPINAL
from ..preprocess.series import SeriesError, read_series_geometry

SUBARTICULAR = {LEFT: LEFT_SS, RIGHT: RIGHT_SS}
PATIENT_LEFT = np.array([1.0, 0.0, 0.0])
PATIENT_UP = np.array([0.0, 0.0, 1.0])


# -- the spine-aligned frame ---------------------------------------------------------------------
def spine_frames(points: dict) -> dict:
    """{level: 3x3 rows (lateral, posterior, superior)} for every level of ``points`` ({level: (3,) mm})."""
    have = [lv for lv in LEVELS if lv in points]
    frames = {}
    for lv in have:
        j = LEVELS.index(lv)
        above = [m for m in have if LEVELS.index(m) < j]
        below = [m for m in have if LEVELS.index(m) > j]
        top = points[above[-1]] if above else points[lv]
        bottom = points[below[0]] if below else points[lv]
        sup = np.asarray(top, float) - np.asarray(bottom, float)
        sup = sup / np.linalg.norm(sup) if np.linalg.norm(sup) > 1e-6 else PATIENT_UP.copy()
        lat = PATIENT_LEFT - (PATIENT_LEFT @ sup) * sup
        lat = lat / np.linalg.norm(lat)
        frames[lv] = np.stack([lat, np.cross(sup, lat), sup])
    return frames


def to_local(frames: dict, anchors: dict, targets: dict) -> dict:
    """{level: offset (3,) in the frame} of targets relative to anchors, where both exist."""
    return {lv: frames[lv] @ (np.asarray(targets[lv]) - np.asarray(anchors[lv]))
            for lv in targets if lv in anchors and lv in frames}


def from_local(frames: dict, anchors: dict, offsets: dict) -> dict:
    return {lv: np.asarray(anchors[lv]) + frames[lv].T @ np.asarray(offsets[lv])
            for lv in anchors if lv in frames and lv in offsets}


def labelled_points(index: pd.DataFrame, condition: str) -> dict:
    """{study_id: {level: (3,) mm}} of one condition's labelled points (first series when several)."""
    out: dict = {}
    sub = index[index["condition"] == condition]
    for r in sub.itertuples(index=False):
        out.setdefault(int(r.study_id), {}).setdefault(r.level, np.array([r.x_mm, r.y_mm, r.z_mm], float))
    return out


def midpoints(left: dict, right: dict) -> dict:
    return {lv: (np.asarray(left[lv]) + np.asarray(right[lv])) / 2 for lv in left if lv in right}


def learn_offsets(sag_t2: pd.DataFrame, sag_t1: pd.DataFrame, axial: pd.DataFrame, studies=None) -> dict:
    """Mean offsets (plain lists, JSON/weights_only friendly) from the store's index frames:

    ``subarticular``: {side: {level: [lat, post, sup]}} from the canal point;
    ``canal_from_foramina``: {level: [...]} from the foramina midpoint; ``counts`` of studies used.
    """
    keep = (lambda s: True) if studies is None else (lambda s, k=set(int(v) for v in studies): s in k)
    canal, fl, fr = labelled_points(sag_t2, SPINAL), labelled_points(sag_t1, LEFT_NFN), labelled_points(sag_t1, RIGHT_NFN)
    acc: dict = {}
    for study_id, pts in canal.items():
        if not keep(study_id):
            continue
        frames = spine_frames(pts)
        for side, cond in SUBARTICULAR.items():
            ss = _points_one(axial, cond, study_id)
            for lv, off in to_local(frames, pts, ss).items():
                acc.setdefault(("subarticular", side, lv), []).append(off)
        mid = midpoints(fl.get(study_id, {}), fr.get(study_id, {}))
        for lv, off in to_local(spine_frames(mid), mid, pts).items():
            acc.setdefault(("canal_from_foramina", lv), []).append(off)
    out = {"subarticular": {s: {} for s in SUBARTICULAR}, "canal_from_foramina": {}, "counts": {}}
    for key, offs in acc.items():
        mean = np.mean(offs, axis=0).round(4).tolist()
        if key[0] == "subarticular":
            out["subarticular"][key[1]][key[2]] = mean
        else:
            out["canal_from_foramina"][key[1]] = mean
        out["counts"]["/".join(key)] = len(offs)
    return out


def _points_one(index: pd.DataFrame, condition: str, study_id: int) -> dict:
    sub = index[(index["study_id"] == study_id) & (index["condition"] == condition)]
    out = {}
    for r in sub.itertuples(index=False):
        out.setdefault(r.level, np.array([r.x_mm, r.y_mm, r.z_mm], float))
    return out


def subarticular_points(canal: dict, offsets: dict, foramina: tuple[dict, dict] | None = None) -> dict:
    """{side: {level: (3,) mm}} predicted from a study's canal points ({level: (3,)}); with no canal
    points, from the foramina midpoints (``foramina`` = (left, right) dicts) when both are there."""
    if not canal and foramina is not None:
        mid = midpoints(*foramina)
        canal = from_local(spine_frames(mid), mid, offsets["canal_from_foramina"])
    frames = spine_frames(canal)
    return {side: from_local(frames, canal, offsets["subarticular"][side]) for side in SUBARTICULAR}


# -- axial series geometry (headers only) and projection -------------------------------------------
@dataclass
class Hit:
    series_id: int
    stack: int  # the stack's index within its series
    slice_index: int  # within the stack
    instance_number: int
    x: float
    y: float
    distance_mm: float  # from the point to the nearest slice plane
    inside: bool  # the stack's slab contains the point (see Stack.coverage)


def project(point, stacks: list, max_outside_slices: float = 2.0) -> Hit | None:
    """The slice of the stack whose slab contains ``point`` (within half a slice gap of its nearest
    plane, inside the image); several contain it: the nearest plane wins. No stack contains it: the
    stack whose end it lies nearest past, when within ``max_outside_slices`` slice gaps of that end
    and inside the image (localisation error near a slab's edge), else None. x/y are clipped."""
    contained, near = [], []
    for st in stacks:
        if not st.usable:
            continue
        inside, dist, col, row, j = st.coverage(point)
        hit = Hit(int(st.series_id), st.index, j, int(st.instance_numbers[j]), float(np.clip(col, 0, st.cols - 1)),
                  float(np.clip(row, 0, st.rows - 1)), dist, inside)
        if inside:
            contained.append(hit)
        elif 0 <= col <= st.cols - 1 and 0 <= row <= st.rows - 1:
            idx = st.locate(point)[0]
            beyond = max(-idx, idx - (st.n_slices - 1), 0.0)  # slices past the slab's end
            if beyond <= max_outside_slices and (idx < 0 or idx > st.n_slices - 1):
                near.append((beyond, hit))
    if contained:
        return min(contained, key=lambda h: h.distance_mm)
    if near:
        return min(near, key=lambda bh: bh[0])[1]
    return None


def read_stacks(study_dir, series_ids) -> tuple[list, list]:
    """(every Stack of the study's given series, [(series_id, reason)] of series that could not be
    read) from headers only: the stacks the converter cuts from (one implementation)."""
    stacks, bad = [], []
    for sid in series_ids:
        try:
            stacks += read_series_geometry(Path(study_dir) / str(sid), int(sid)).stacks
        except SeriesError as e:
            bad.append((sid, e.reason))
    return stacks, bad


def axial_stack_exact(images_dir, predicted: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """How often a predicted subarticular point lands in the labelled point's series and stack.

    ``predicted`` / ``truth``: coordinate frames (train_label_coordinates format, conditions and levels
    as read by :func:`lsdc.core.readers.read_coordinates`). Every labelled subarticular point counts;
    one without a prediction is a miss. Returns {"axial_stack_exact", "axial_points", "axial_predicted"}."""
    cond = set(SUBARTICULAR.values())
    truth = truth[truth["condition"].isin(cond)]
    pred = {(int(r.study_id), r.condition, r.level): (int(r.series_id), int(r.instance_number))
            for r in predicted[predicted["condition"].isin(cond)].itertuples(index=False)}
    stack_of: dict = {}

    def stack(study_id: int, series_id: int, instance: int):
        if (study_id, series_id) not in stack_of:
            try:
                s = read_series_geometry(Path(images_dir) / str(study_id) / str(series_id), series_id)
                stack_of[(study_id, series_id)] = s
            except SeriesError:
                stack_of[(study_id, series_id)] = None
        s = stack_of[(study_id, series_id)]
        try:
            return None if s is None else s.find(instance)[0].index
        except SeriesError:
            return None

    hits = found = 0
    for r in truth.itertuples(index=False):
        p = pred.get((int(r.study_id), r.condition, r.level))
        if p is None:
            continue
        found += 1
        if p[0] == int(r.series_id):
            k = stack(int(r.study_id), p[0], int(r.instance_number))
            hits += k is not None and k == stack(int(r.study_id), p[0], p[1])
    n = len(truth)
    return {"axial_stack_exact": round(hits / n, 4) if n else None, "axial_points": n, "axial_predicted": found}
