"""Localiser data: the store's sagittal volumes in one canonical orientation, their geometry, and the
labelled keypoints in volume coordinates.

A volume (store contract, ``<view>/volumes``) is the whole series resampled to ``vs`` slices (evenly
from the first to the last spatial slice) of ``vpx`` x ``vpx`` pixels (the whole image, aspect not
kept). Volume coordinates ``(k, r, c)`` are a volume slice, row and column with pixel centres at
integers, in the canonical orientation: k grows towards patient right, r towards the feet, c towards
the back (the usual sagittal layout; a series stored otherwise is flipped on load and flipped back
when mapping out, so the network always sees one layout). Image coordinates are the competition's:
spatial slice index (then InstanceNumber), x = column, y = row of the original image.

Keypoints: the spinal canal centre at each level (Sagittal T2/STIR) and the left/right neural foramina
(Sagittal T1), 15 in :data:`KEYPOINTS` order; a volume is supervised on its own view's keypoints only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core import geometry
from ..core.errors import InputError
from ..core.schema import LEFT_NFN, LEVELS, RIGHT_NFN, SAG_T1, SAG_T2, SPINAL
from ..store.reader import read_index, read_volume_index, volumes_array

KEYPOINTS = tuple((c, lv) for c in (SPINAL, LEFT_NFN, RIGHT_NFN) for lv in LEVELS)
KEYPOINT_INDEX = {kp: i for i, kp in enumerate(KEYPOINTS)}
#: the keypoints each sagittal view is labelled (and decoded) on
VIEW_KEYPOINTS = {SAG_T2: tuple(range(0, 5)), SAG_T1: tuple(range(5, 15))}
LOC_VIEWS = (SAG_T2, SAG_T1)
_SWAP = {SPINAL: SPINAL, LEFT_NFN: RIGHT_NFN, RIGHT_NFN: LEFT_NFN}
#: keypoint index after a left-right mirror (slice axis reversed): the foramina swap sides
MIRROR = tuple(KEYPOINT_INDEX[(_SWAP[c], lv)] for c, lv in KEYPOINTS)


@dataclass
class VolumeGeom:
    """One series' geometry (a volumes.parquet row) and the map between image, volume and patient mm."""

    study_id: int
    series_id: int
    view: str
    n_slices: int
    rows: int
    cols: int
    spacing_rc: tuple  # (row mm, col mm) of the original image
    iop: np.ndarray  # (6,)
    positions: np.ndarray  # (n, 3) ImagePositionPatient per spatial slice
    instance_numbers: np.ndarray  # (n,) InstanceNumber per spatial slice
    vs: int  # volume slices
    vpx: int  # volume side in pixels
    flip_k: bool = False
    flip_r: bool = False
    flip_c: bool = False
    stack: int = 0  # the series' stack the volume was made from (its largest)

    @classmethod
    def from_row(cls, row, vs: int, vpx: int) -> "VolumeGeom":
        if vs < 2:
            raise InputError(f"the localiser needs preprocess.volume_slices >= 2, the store has {vs}")
        iop = np.asarray(json.loads(row["iop"]), np.float64)
        x_axis, y_axis = geometry.orientation_axes(iop)
        normal = geometry.slice_normal(iop)
        return cls(int(row["study_id"]), int(row["series_id"]), str(row["view"]), int(row["n_slices"]),
                   int(row["rows"]), int(row["cols"]), (float(row["spacing_row_mm"]), float(row["spacing_col_mm"])),
                   iop, np.asarray(json.loads(row["positions"]), np.float64),
                   np.asarray(json.loads(row["instance_numbers"]), np.int64), vs, vpx,
                   flip_k=bool(normal[0] > 0),  # canonical: slices run towards patient right (-x)
                   flip_r=bool(y_axis[2] > 0),  # rows run to the feet (-z)
                   flip_c=bool(x_axis[1] < 0),  # columns run to the back (+y)
                   stack=int(row["stack"]))

    # -- volumes --------------------------------------------------------------------------------
    def canonical(self, vol: np.ndarray) -> np.ndarray:
        """The stored volume [vs, vpx, vpx] flipped into the canonical orientation."""
        axes = tuple(a for a, f in enumerate((self.flip_k, self.flip_r, self.flip_c)) if f)
        return np.ascontiguousarray(np.flip(vol, axes)) if axes else vol

    @property
    def slice_scale(self) -> float:
        """Real slices per volume slice."""
        return (self.n_slices - 1) / (self.vs - 1)

    def voxel_mm(self) -> tuple[float, float, float]:
        """mm per volume step along (k, r, c)."""
        z = self.positions @ geometry.slice_normal(self.iop)
        gap = float(np.median(np.abs(np.diff(z)))) if self.n_slices > 1 else 1.0
        return (gap * self.slice_scale, self.spacing_rc[0] * self.rows / self.vpx,
                self.spacing_rc[1] * self.cols / self.vpx)

    # -- coordinate maps ------------------------------------------------------------------------
    def to_volume(self, idx, x, y) -> np.ndarray:
        """(k, r, c) canonical volume coordinates of image point (spatial slice idx, col x, row y)."""
        k = np.asarray(idx, np.float64) / self.slice_scale
        r = (np.asarray(y, np.float64) + 0.5) * self.vpx / self.rows - 0.5
        c = (np.asarray(x, np.float64) + 0.5) * self.vpx / self.cols - 0.5
        last = self.vs - 1, self.vpx - 1, self.vpx - 1
        k, r, c = (last[i] - v if f else v for i, (v, f) in enumerate(((k, self.flip_k), (r, self.flip_r), (c, self.flip_c))))
        return np.stack([k, r, c], axis=-1)

    def to_image(self, kc) -> np.ndarray:
        """Inverse of :meth:`to_volume`: (..., 3) volume coordinates -> (..., 3) (idx, x, y)."""
        kc = np.asarray(kc, np.float64)
        last = self.vs - 1, self.vpx - 1, self.vpx - 1
        k, r, c = (last[i] - kc[..., i] if f else kc[..., i]
                   for i, f in enumerate((self.flip_k, self.flip_r, self.flip_c)))
        idx = k * self.slice_scale
        y = (r + 0.5) * self.rows / self.vpx - 0.5
        x = (c + 0.5) * self.cols / self.vpx - 0.5
        return np.stack([idx, x, y], axis=-1)

    def to_patient(self, idx: float, x: float, y: float) -> np.ndarray:
        """Patient point (mm) of image point (x, y) at a fractional spatial slice index (the slice
        position interpolated linearly, extrapolated past the ends)."""
        i0 = int(np.clip(np.floor(idx), 0, self.n_slices - 2))
        ipp = self.positions[i0] + (idx - i0) * (self.positions[i0 + 1] - self.positions[i0])
        return geometry.pixel_to_patient(ipp, self.iop, self.spacing_rc, x, y)

    def from_patient(self, point) -> np.ndarray:
        """(fractional spatial slice index, x, y) of a patient point: inverse of :meth:`to_patient`."""
        normal = geometry.slice_normal(self.iop)
        z = self.positions @ normal
        s = float(np.asarray(point, np.float64) @ normal)
        i0 = int(np.clip(np.searchsorted(z, s) - 1, 0, self.n_slices - 2))
        idx = i0 + (s - z[i0]) / (z[i0 + 1] - z[i0])
        ipp = self.positions[i0] + (idx - i0) * (self.positions[i0 + 1] - self.positions[i0])
        x, y, _ = geometry.patient_to_pixel(ipp, self.iop, self.spacing_rc, point)
        return np.array([idx, x, y])

    def nearest_slice(self, idx: float) -> int:
        return int(np.clip(np.rint(idx), 0, self.n_slices - 1))


@dataclass
class LocSet:
    """Every sagittal volume of a store with its keypoint targets."""

    geoms: list  # VolumeGeom per item
    volumes: np.ndarray  # uint8 [N, vs, vpx, vpx], canonical orientation
    targets: np.ndarray  # float32 [N, K, 3] volume coordinates (k, r, c); NaN where not labelled
    labels: pd.DataFrame  # one row per labelled keypoint: item, keypoint, study_id, series_id, slice_index,
    #                       instance_number, x_px, y_px, x_mm, y_mm, z_mm

    @property
    def study_ids(self) -> np.ndarray:
        return np.array([g.study_id for g in self.geoms], np.int64)

    def __len__(self) -> int:
        return len(self.geoms)


def volume_shape(store) -> tuple[int, int]:
    """(volume_slices, volume_px) of the store's sagittal volumes."""
    from ..store.reader import store_preprocess_config
    p = store_preprocess_config(store)
    return p.volume_slices, p.volume_px


def load_volumes(store, views=LOC_VIEWS) -> tuple[list, np.ndarray]:
    """(geoms, canonical uint8 volumes) of every sagittal series in the store."""
    vs, vpx = volume_shape(store)
    geoms, vols = [], []
    for view in views:
        vindex = read_volume_index(store, view)
        if not len(vindex):
            continue
        arr = volumes_array(store, view)[:]
        for j, row in enumerate(vindex.to_dict("records")):
            g = VolumeGeom.from_row(row, vs, vpx)
            geoms.append(g)
            vols.append(g.canonical(arr[j]))
    volumes = np.stack(vols) if vols else np.zeros((0, vs, vpx, vpx), np.uint8)
    return geoms, volumes


def load_locset(store, cross_view: bool = True) -> LocSet:
    """Volumes plus the labelled keypoints of the store's sagittal index rows (train split).

    With ``cross_view`` every volume is also given the other view's keypoints of its study, projected
    through patient coordinates (the canal on Sagittal T1, the foramina on Sagittal T2) where they
    fall inside it; ``labels`` (what the metrics use) keeps the own-view labels only."""
    geoms, volumes = load_volumes(store)
    item_of = {(g.study_id, g.series_id, g.stack): i for i, g in enumerate(geoms)}
    targets = np.full((len(geoms), len(KEYPOINTS), 3), np.nan, np.float32)
    records = []
    for view in LOC_VIEWS:
        index = read_index(store, view)
        for r in index.itertuples(index=False):
            i = item_of.get((int(r.study_id), int(r.series_id), int(r.stack)))  # a label on another stack:
            # its slice_index counts in that stack, not in the volume's
            kp = KEYPOINT_INDEX.get((r.condition, r.level))
            if i is None or kp is None:
                continue
            targets[i, kp] = geoms[i].to_volume(r.slice_index, r.x_px, r.y_px)
            records.append({"item": i, "keypoint": kp, "study_id": int(r.study_id), "series_id": int(r.series_id),
                            "slice_index": int(r.slice_index), "instance_number": int(r.instance_number),
                            "x_px": float(r.x_px), "y_px": float(r.y_px),
                            "x_mm": float(r.x_mm), "y_mm": float(r.y_mm), "z_mm": float(r.z_mm)})
    if cross_view:
        points: dict = {}
        for rec in records:
            points.setdefault(rec["study_id"], {}).setdefault(rec["keypoint"], [rec["x_mm"], rec["y_mm"], rec["z_mm"]])
        for i, g in enumerate(geoms):
            for kp, point in points.get(g.study_id, {}).items():
                if kp in VIEW_KEYPOINTS[g.view]:
                    continue
                idx, x, y = g.from_patient(point)
                if -0.5 <= idx <= g.n_slices - 0.5 and 0 <= x <= g.cols - 1 and 0 <= y <= g.rows - 1:
                    targets[i, kp] = g.to_volume(idx, x, y)
    cols = ["item", "keypoint", "study_id", "series_id", "slice_index", "instance_number", "x_px", "y_px",
            "x_mm", "y_mm", "z_mm"]
    return LocSet(geoms, volumes, targets, pd.DataFrame(records, columns=cols))
