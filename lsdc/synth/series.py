"""Acquisition plans: which series a study has, their geometry, appearance and encoding.

Conventions (DICOM LPS patient mm; +x patient left, +y posterior, +z superior):

* Sagittal T1 and Sagittal T2/STIR: IOP = [0,1,0, 0,0,-1] (columns run posterior, rows run down),
  slices stacked along x; the slice normal X x Y is -x, so spatial order is patient left -> right.
* Axial T2: IOP = [1,0,0, 0,cos t,sin t] with a small tilt t about x towards the discs' angle;
  columns run to patient left (larger column = patient left), rows run posterior; normal ~ +z.
* ``ipps`` are stored in spatial order (ascending along the normal); ``instance_numbers[k]`` is the
  InstanceNumber of spatial slice k (1..n, sometimes running opposite to spatial order).
* Every number written to a DICOM (IPP, IOP, PixelSpacing) is rounded first, and the rounded value is
  what the renderer and the coordinate file use.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from ..core.geometry import patient_to_pixel, slice_normal
from ..core.schema import (AX_T2, CONDITION_VIEW, CONDITIONS, LEFT_NFN, LEFT_SS, LEVELS, RIGHT_NFN, RIGHT_SS,
                           SAG_T1, SAG_T2, SPINAL, VIEWS)
from .phantom import StudyAnatomy

SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
MARGIN_MM = 25.0  # every landmark at least this far inside the field of view


@dataclass(frozen=True)
class Variety:
    """Probabilities of the real-data quirks planted (per study for the first two, else per series)."""
    two_axial: float = 0.15          # axial T2 split into an upper and a lower series
    missing_series: float = 0.05     # one view absent (its labels stay, its coordinate rows go)
    monochrome1: float = 0.07        # stored inverted
    rescaled: float = 0.12           # RescaleSlope/Intercept != 1/0
    reversed_instances: float = 0.25  # InstanceNumber runs against spatial order
    rle: float = 0.06                # RLE Lossless
    jpeg2000: float = 0.04           # JPEG 2000 Lossless
    implicit_vr: float = 0.15        # Implicit VR Little Endian (default: explicit)
    stir: float = 0.2                # the Sagittal T2/STIR series is a STIR


@dataclass
class SeriesPlan:
    series_id: int
    view: str
    sequence: str                    # T1 / T2 / STIR (phantom.SEQUENCES)
    rows: int
    cols: int
    spacing_rc: tuple                # PixelSpacing (row mm, column mm)
    iop: tuple                       # ImageOrientationPatient as written
    ipps: np.ndarray                 # (n, 3) ImagePositionPatient as written, in spatial order
    instance_numbers: np.ndarray     # (n,) InstanceNumber of each spatial slice
    thickness_mm: float
    slice_spacing_mm: float
    levels: tuple = LEVELS           # the disc levels this series is meant to cover
    scale: float = 1000.0            # stored value of relative intensity 1.0
    noise: float = 0.02              # Rician noise sd, relative
    bias: tuple = (0.0, 0.0, 0.0)    # log bias field: a*u + b*v + c*(u^2 + v^2), u, v in [-1, 1]
    photometric: str = "MONOCHROME2"
    slope: float = 1.0
    intercept: float = 0.0
    bits_stored: int = 12
    transfer_syntax: str = ExplicitVRLittleEndian
    extra: dict = field(default_factory=dict)

    def nearest_slice(self, point) -> tuple[int, float, float]:
        """(spatial index, col, row) of the slice nearest a patient point along the normal."""
        hits = [patient_to_pixel(ipp, self.iop, self.spacing_rc, point) for ipp in self.ipps]
        k = int(np.argmin([abs(h[2]) for h in hits]))
        return k, hits[k][0], hits[k][1]


def _matrix(rng) -> tuple[int, int]:
    rows = int(rng.choice([256, 288, 320, 384, 448, 512, 640], p=[.3, .14, .26, .2, .04, .04, .02]))
    cols = rows if rng.random() > 0.15 else int(16 * round(rows * rng.uniform(0.75, 0.9) / 16))
    return rows, cols


def _spacing(rng, fov_mm: float, rows: int, lo: float, hi: float) -> tuple[float, float]:
    dr = round(float(np.clip(fov_mm / rows, lo, hi)), 4)
    dc = dr if rng.random() > 0.1 else round(float(np.clip(dr * rng.uniform(0.95, 1.05), lo, hi)), 4)
    return dr, dc


def _stack(iop, centre, rows, cols, spacing_rc, n, ds) -> np.ndarray:
    """IPPs (n, 3) of a stack centred on ``centre`` (patient mm), ascending along the normal."""
    x, y = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = slice_normal(iop)
    k = np.arange(n) - (n - 1) / 2
    ipp = centre - (cols - 1) / 2 * spacing_rc[1] * x - (rows - 1) / 2 * spacing_rc[0] * y
    return np.round(ipp[None, :] + k[:, None] * ds * normal[None, :], 4)


def _centre_in_plane(rng, pts, axis, fov_mm, bias_mm=0.0, jitter_mm=12.0) -> float:
    """A FOV centre along ``axis`` near the points (plus bias and jitter), keeping every point at
    least MARGIN_MM inside the field of view."""
    t = pts @ axis
    lo, hi = t.max() - (fov_mm / 2 - MARGIN_MM), t.min() + (fov_mm / 2 - MARGIN_MM)
    mid = (t.min() + t.max()) / 2
    if lo > hi:
        return float(mid)
    return float(np.clip(mid + bias_mm + rng.uniform(-jitter_mm, jitter_mm), lo, hi))


def _sagittal(rng, anat: StudyAnatomy, view: str, series_id: int, stir_p: float) -> SeriesPlan:
    pts = np.array([anat.landmark(c, lv) for c in (SPINAL, LEFT_NFN, RIGHT_NFN) for lv in LEVELS])
    rows, cols = _matrix(rng)
    dr, dc = _spacing(rng, rng.uniform(230, 300), max(rows, cols), 0.5, 0.9)
    thick = round(rng.uniform(3.0, 4.0), 1)
    ds = round(float(np.clip(thick * rng.uniform(1.0, 1.15), 3.0, 4.5)), 2)
    mid_x = float(np.mean(pts[:, 0])) + rng.uniform(-3, 3)
    half = np.abs(pts[:, 0] - mid_x).max() + 8
    n = int(max(np.ceil(2 * half / ds) + 1, rng.integers(15, 26)))
    x, y = np.array(SAGITTAL_IOP[:3]), np.array(SAGITTAL_IOP[3:])
    cx = _centre_in_plane(rng, pts, x, cols * dc, bias_mm=rng.uniform(-25, 10))
    cy = _centre_in_plane(rng, pts, y, rows * dr)
    centre = cx * x + cy * y + mid_x * np.array([1.0, 0, 0])
    ipps = _stack(SAGITTAL_IOP, centre, rows, cols, (dr, dc), n, ds)
    seq = "T1" if view == SAG_T1 else ("STIR" if rng.random() < stir_p else "T2")
    return SeriesPlan(series_id, view, seq, rows, cols, (dr, dc), SAGITTAL_IOP, ipps,
                      np.arange(1, n + 1), thick, ds)


def _axial(rng, anat: StudyAnatomy, series_id: int, levels: tuple) -> SeriesPlan:
    pts = np.array([anat.landmark(c, lv) for c in (SPINAL, LEFT_SS, RIGHT_SS) for lv in levels])
    phis = [np.arctan2(anat.disc_axes[lv][2][1], anat.disc_axes[lv][2][2]) for lv in levels]
    tilt = float(np.clip(-np.mean(phis) * rng.uniform(0.3, 0.9) + np.radians(rng.uniform(-2, 2)),
                         np.radians(-15), np.radians(15)))
    iop = (1.0, 0.0, 0.0, 0.0, round(float(np.cos(tilt)), 6), round(float(np.sin(tilt)), 6))
    normal = slice_normal(iop)
    rows, cols = _matrix(rng)
    dr, dc = _spacing(rng, rng.uniform(170, 240), max(rows, cols), 0.6, 0.9)
    thick = round(rng.uniform(3.0, 4.5), 1)
    ds = round(thick * rng.uniform(1.0, 1.2), 2)
    t = pts @ normal
    lo, hi = t.min() - rng.uniform(6, 15), t.max() + rng.uniform(6, 15)
    n = int(np.ceil((hi - lo) / ds)) + 1
    if n > 60:
        ds, n = round((hi - lo) / 59, 2), 60
    n = max(n, 20)
    x, y = np.asarray(iop[:3]), np.asarray(iop[3:])
    cx = _centre_in_plane(rng, pts, x, cols * dc)
    cy = _centre_in_plane(rng, pts, y, rows * dr, bias_mm=-rng.uniform(0, 25))
    centre = cx * x + cy * y + (lo + hi) / 2 * normal
    ipps = _stack(iop, centre, rows, cols, (dr, dc), n, ds)
    return SeriesPlan(series_id, AX_T2, "T2", rows, cols, (dr, dc), iop, ipps, np.arange(1, n + 1),
                      thick, ds, levels=tuple(levels))


def _appearance(rng, plan: SeriesPlan, variety: Variety) -> None:
    """Intensity scale, noise, bias field, photometric/rescale and transfer syntax of a series."""
    plan.scale = rng.uniform(500, 3000) if rng.random() < 0.85 else rng.uniform(5000, 20000)
    plan.noise = rng.uniform(0.012, 0.035)
    a, b = rng.uniform(-0.25, 0.25, 2)
    if plan.view == AX_T2:
        b += 0.15  # the spine coil is posterior: rows run posterior on axials, columns on sagittals
    else:
        a += 0.15
    plan.bias = (float(a), float(b), rng.uniform(-0.2, 0.05))
    if rng.random() < variety.monochrome1:
        plan.photometric, plan.scale = "MONOCHROME1", min(plan.scale, 2800.0)
    elif rng.random() < variety.rescaled:
        plan.slope = round(float(rng.uniform(0.25, 4.0)), 5)
        plan.intercept = 0.0 if rng.random() < 0.6 else -round(float(rng.uniform(50, 500)), 2)
    peak = (plan.scale * 1.5 - plan.intercept) / plan.slope
    plan.bits_stored = 12 if peak < 4095 else 16
    if rng.random() < variety.reversed_instances:
        plan.instance_numbers = plan.instance_numbers[::-1].copy()
    u = rng.random()
    plan.transfer_syntax = (RLELossless if u < variety.rle else
                            JPEG2000Lossless if u < variety.rle + variety.jpeg2000 else
                            ImplicitVRLittleEndian if u < variety.rle + variety.jpeg2000 + variety.implicit_vr
                            else ExplicitVRLittleEndian)


def plan_study(rng, anat: StudyAnatomy, series_ids, variety: Variety = Variety()) -> tuple[list, dict]:
    """The study's series plans (Sag T1, Sag T2/STIR, one or two Axial T2) and what was chosen."""
    ids = iter(series_ids)
    plans = [_sagittal(rng, anat, view, next(ids), variety.stir) for view in (SAG_T1, SAG_T2)]
    two_axial = rng.random() < variety.two_axial
    if two_axial:
        k = int(rng.integers(2, 4))
        plans += [_axial(rng, anat, next(ids), LEVELS[:k]), _axial(rng, anat, next(ids), LEVELS[k:])]
    else:
        plans.append(_axial(rng, anat, next(ids), LEVELS))
    missing = VIEWS[int(rng.integers(3))] if rng.random() < variety.missing_series else None
    plans = [p for p in plans if p.view != missing]
    for p in plans:
        _appearance(rng, p, variety)
    return plans, {"two_axial": two_axial, "missing_view": missing}


def coordinate_rows(anat: StudyAnatomy, plans: list, blank: np.ndarray) -> list[tuple]:
    """(series_id, instance_number, condition, level, x, y) of every labelled cell whose view exists."""
    out = []
    for i, cond in enumerate(CONDITIONS):
        for j, lv in enumerate(LEVELS):
            cands = [p for p in plans if p.view == CONDITION_VIEW[cond] and lv in p.levels]
            if blank[i, j] or not cands:
                continue
            plan = cands[0]
            k, col, row = plan.nearest_slice(anat.landmark(cond, lv))
            assert 0 <= col <= plan.cols - 1 and 0 <= row <= plan.rows - 1, (cond, lv, col, row)
            out.append((plan.series_id, int(plan.instance_numbers[k]), cond, lv, round(col, 1), round(row, 1)))
    return out

