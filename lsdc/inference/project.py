"""Sagittal keypoints -> axial points, through the DICOM geometry (patient mm, LPS).

Subarticular points are not localised on the axial images: each is the study's spinal canal point at
that level plus a learned offset, expressed in a spine-aligned frame so it follows the lordosis:

    superior  from the canal point of the nearest level below to that of the nearest level above
    lateral   patient left (+x) made orthogonal to superior
    posterior superior x lateral

The offset table is the mean, over training studies, of (landmark - anchor) in that frame, per level
(and side). Anchors: the canal point (subarticular), and, for a study without its Sagittal T2 series,
the midpoint of the two foramina (canal = midpoint + its own learned offset). The patient point is
then projected into the axial series whose slab contains it: the slice whose plane is nearest, and
its pixel (col, row) from the slice geometry, read from headers only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import geometry
from ..core.schema import LEFT, LEFT_NFN, LEFT_SS, LEVELS, RIGHT, RIGHT_NFN, RIGHT_SS, SPINAL
from ..preprocess.series import SeriesError, index_series, spatial_order

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
class SliceStack:
    """A series' slice geometry in spatial order, from its headers (no pixel data)."""

    series_id: int
    iop: np.ndarray
    spacing_rc: tuple
    rows: int
    cols: int
    positions: np.ndarray  # (n, 3) IPP, spatial order
    instance_numbers: np.ndarray
    z_mm: np.ndarray  # positions on the normal, ascending

    @classmethod
    def read(cls, series_dir, series_id: int) -> "SliceStack":
        """Raises :class:`SeriesError` (reason code) for a series whose geometry cannot be used."""
        headers = index_series(Path(series_dir))
        order, z = spatial_order(headers)
        first = headers[order[0]]
        return cls(int(series_id), np.asarray(first.iop, float), tuple(first.spacing_rc), first.rows, first.cols,
                   np.array([headers[i].ipp for i in order], float),
                   np.array([headers[i].instance_number for i in order], np.int64), z[order])

    def locate(self, point) -> tuple[float, float, float]:
        """(fractional slice index, col, row on the nearest slice) of a patient point."""
        return geometry.locate_in_stack(point, self.positions, self.z_mm, self.iop, self.spacing_rc)


@dataclass
class Hit:
    series_id: int
    slice_index: int
    instance_number: int
    x: float
    y: float
    slice_frac: float
    inside: bool  # the point lies within the slab (half a slice beyond either end at most)


def project(point, stacks: list, max_outside_slices: float = 2.0) -> Hit | None:
    """The slice of the series whose slab contains ``point`` best (largest distance to the slab's end,
    in slices); a point outside every slab goes to the nearest one when within ``max_outside_slices``
    of it, else None. x/y are clipped to the image."""
    best, best_key = None, None
    for st in stacks:
        idx, col, row = st.locate(point)
        n = len(st.z_mm)
        margin = min(idx + 0.5, n - 0.5 - idx)  # > 0 inside the slab
        if margin < -max_outside_slices:
            continue
        in_plane = 0 <= col <= st.cols - 1 and 0 <= row <= st.rows - 1
        key = (margin > 0 and in_plane, margin)
        if best_key is None or key > best_key:
            j = int(np.clip(np.rint(idx), 0, n - 1))
            best = Hit(st.series_id, j, int(st.instance_numbers[j]), float(np.clip(col, 0, st.cols - 1)),
                       float(np.clip(row, 0, st.rows - 1)), float(idx), bool(margin > 0))
            best_key = key
    return best


def read_stacks(study_dir, series_ids) -> tuple[list, list]:
    """(SliceStacks, [(series_id, reason)] of series that could not be read) of a study's axial series."""
    stacks, bad = [], []
    for sid in series_ids:
        try:
            stacks.append(SliceStack.read(Path(study_dir) / str(sid), sid))
        except SeriesError as e:
            bad.append((sid, e.reason))
    return stacks, bad
