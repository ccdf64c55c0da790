"""Acquisition plans: which series a study has, their geometry, appearance and encoding.

Conventions (DICOM LPS patient mm; +x patient left, +y posterior, +z superior):

* Sagittal T1 and Sagittal T2/STIR: IOP = [0,1,0, 0,0,-1] (columns run posterior, rows run down),
  slices stacked along x; the slice normal X x Y is -x, so spatial order is patient left -> right.
* Axial T2: IOP = [1,0,0, 0,cos t,sin t] with a small tilt t about x towards the discs' angle;
  columns run to patient left (larger column = patient left), rows run posterior; normal ~ +z.
* ``ipps`` hold the series' main stack in spatial order (ascending along the normal), or, for an
  axial series of angled per-level slabs, the slabs from the lowest level up, each ascending along its
  own normal; planted extra slices (odd-geometry slices, repeated positions) follow. ``instance_numbers[k]``
  is the InstanceNumber of slice k (1..n, sometimes running opposite to spatial order).
* Geometry is per slice (``iops``, ``matrices``, ``spacings``); the scalar ``iop``/``rows``/``cols``/
  ``spacing_rc`` describe slice 0, i.e. the main stack of an ordinary series.
* Every number written to a DICOM (IPP, IOP, PixelSpacing) is rounded first, and the rounded value is
  what the renderer and the coordinate file use.

Real-data series quirks (rates in :class:`Variety`, drawn from a quirk generator separate from the
study's main stream so the anatomy and base geometry do not depend on them):

* angled slabs: an axial series made of 3-5 slabs, one per disc level (the lowest levels it covers),
  each parallel to its own disc (+- a few degrees), 4-8 slices centred on the disc; the subarticular
  rows of a level point into that level's slab, a level without a slab gets no row;
* odd slices: 1-2 slices past the far end of the stack with another matrix or PixelSpacing;
* repeated position: one slice acquired twice at the same IPP (fresh noise, its own InstanceNumber);
* a second series of a sagittal view (besides the two-axial split), thickness tags omitted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from ..core.geometry import orientation_axes, patient_to_pixel, slice_normal
from ..core.schema import (AX_T2, CONDITION_VIEW, CONDITIONS, LEFT_NFN, LEFT_SS, LEVELS, RIGHT_NFN, RIGHT_SS, SAG_T1,
                           SAG_T2, SPINAL, VIEWS)
from .phantom import StudyAnatomy

SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
MARGIN_MM = 25.0  # every landmark at least this far inside the field of view
MIN_SLAB_ANGLE_DEG = 3.0  # slabs of one series differ in orientation by at least this
SLAB_JITTER_DEG = (2.5, 1.5)  # slab normal vs its disc's normal: about the lateral, the AP axis
ODD_MATRICES = (192, 256, 320, 384, 448, 512)


@dataclass(frozen=True)
class Variety:
    """Probabilities of the real-data quirks planted: per study for ``two_axial``, ``missing_series`` and
    ``repeated_sagittal`` (together about 16 % of studies get two series of one view), per axial series
    for ``angled_slabs``, else per series."""
    two_axial: float = 0.15          # axial T2 split into an upper and a lower series
    missing_series: float = 0.05     # one view absent (its labels stay, its coordinate rows go)
    monochrome1: float = 0.07        # stored inverted
    rescaled: float = 0.12           # RescaleSlope/Intercept != 1/0
    reversed_instances: float = 0.25  # InstanceNumber runs against spatial order
    rle: float = 0.06                # RLE Lossless
    jpeg2000: float = 0.04           # JPEG 2000 Lossless
    implicit_vr: float = 0.15        # Implicit VR Little Endian (default: explicit)
    stir: float = 0.2                # the Sagittal T2/STIR series is a STIR
    angled_slabs: float = 0.33       # per axial series: 3-5 per-level slabs, each parallel to its disc
    odd_slices: float = 0.03         # 1-2 extra slices with another matrix or PixelSpacing
    repeated_position: float = 0.02  # one slice acquired twice at the same position
    repeated_sagittal: float = 0.02  # per study without two axials: a second series of a sagittal view
    no_thickness_tags: float = 0.05  # SliceThickness and SpacingBetweenSlices omitted


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
    # per-slice geometry and planted quirks (filled from the scalars above when not given)
    iops: np.ndarray = None          # (n, 6) ImageOrientationPatient of each slice
    matrices: np.ndarray = None      # (n, 2) (Rows, Columns) of each slice
    spacings: np.ndarray = None      # (n, 2) PixelSpacing of each slice
    stack_ids: np.ndarray = None     # (n,) geometric stack of each slice (slabs 0..k-1 bottom up, odd last)
    odd: np.ndarray = None           # (n,) slice has another matrix / spacing (never labelled)
    copy_of: np.ndarray = None       # (n,) index of the slice this one re-acquires, -1 if none
    level_stacks: dict = field(default_factory=dict)  # angled slabs: level -> stack id of its slab
    write_thickness: bool = True     # SliceThickness / SpacingBetweenSlices written
    odd_kind: str | None = None      # "matrix" | "spacing" when odd slices are planted

    def __post_init__(self):
        self.ipps = np.asarray(self.ipps, dtype=np.float64).reshape(-1, 3)
        self.instance_numbers = np.asarray(self.instance_numbers)
        n = len(self.ipps)
        if self.iops is None:
            self.iops = np.tile(np.asarray(self.iop, dtype=np.float64), (n, 1))
        if self.matrices is None:
            self.matrices = np.tile([int(self.rows), int(self.cols)], (n, 1))
        if self.spacings is None:
            self.spacings = np.tile(np.asarray(self.spacing_rc, dtype=np.float64), (n, 1))
        if self.stack_ids is None:
            self.stack_ids = np.zeros(n, dtype=int)
        if self.odd is None:
            self.odd = np.zeros(n, dtype=bool)
        if self.copy_of is None:
            self.copy_of = np.full(n, -1, dtype=int)

    @property
    def n(self) -> int:
        return len(self.ipps)

    def geometry(self, k: int) -> tuple:
        """(ipp, iop, spacing_rc, rows, cols) of slice k, as written."""
        rows, cols = (int(v) for v in self.matrices[k])
        return (self.ipps[k], tuple(float(v) for v in self.iops[k]), tuple(float(v) for v in self.spacings[k]),
                rows, cols)

    @property
    def angled_slabs(self) -> int:
        return len(self.level_stacks)

    @property
    def repeated_instances(self) -> list[int]:
        return [int(self.instance_numbers[k]) for k in np.flatnonzero(self.copy_of >= 0)]

    @property
    def expected_stacks(self) -> int:
        """Stacks of one (orientation, matrix, spacing) without gaps: the slabs (or 1), + the odd slices."""
        return max(self.angled_slabs, 1) + int(self.odd.any())

    def label_slices(self, level: str | None = None) -> np.ndarray:
        """Indices of the slices a coordinate row may point at (for ``level``): original acquisitions of
        the main stack, or of the level's slab on an angled series (none for a level without a slab)."""
        ok = ~self.odd & (self.copy_of < 0)
        if self.level_stacks and level is not None:
            if level not in self.level_stacks:
                return np.zeros(0, dtype=int)
            ok &= self.stack_ids == self.level_stacks[level]
        return np.flatnonzero(ok)

    def nearest_slice(self, point, level: str | None = None) -> tuple[int, float, float]:
        """(slice index, col, row) of the slice nearest a patient point along its normal, among
        :meth:`label_slices` (``level``)."""
        idx = self.label_slices(level)
        hits = [patient_to_pixel(self.ipps[k], self.iops[k], self.spacings[k], point) for k in idx]
        j = int(np.argmin([abs(h[2]) for h in hits]))
        return int(idx[j]), hits[j][0], hits[j][1]

    def _append(self, ipps, iops, matrices, spacings, stack_ids, instance_numbers, odd=False, copy_of=-1):
        m = len(ipps)
        self.ipps = np.vstack([self.ipps, ipps])
        self.iops = np.vstack([self.iops, iops])
        self.matrices = np.vstack([self.matrices, matrices])
        self.spacings = np.vstack([self.spacings, spacings])
        self.stack_ids = np.concatenate([self.stack_ids, np.broadcast_to(stack_ids, m)])
        self.instance_numbers = np.concatenate([self.instance_numbers, instance_numbers])
        self.odd = np.concatenate([self.odd, np.full(m, odd)])
        self.copy_of = np.concatenate([self.copy_of, np.full(m, copy_of)])


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


def _rotation(axis, deg: float) -> np.ndarray:
    """Rotation matrix by ``deg`` about a unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(deg)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def _clamp_in_plane(t0: float, pts, axis, fov_mm: float) -> float:
    """``t0`` moved just enough that every point is at least MARGIN_MM inside the field of view."""
    t = pts @ axis
    lo, hi = t.max() - (fov_mm / 2 - MARGIN_MM), t.min() + (fov_mm / 2 - MARGIN_MM)
    return float((t.min() + t.max()) / 2) if lo > hi else float(np.clip(t0, lo, hi))


def _angled_slabs(rng, anat: StudyAnatomy, plan: SeriesPlan) -> None:
    """Replace an axial plan's stack by one slab per disc level (the k lowest it covers, k in 3..5),
    each parallel to its disc up to a small jitter, 4-8 slices centred on the disc; slab orientations
    differ pairwise by >= MIN_SLAB_ANGLE_DEG and neighbouring slabs keep 2 slice spacings clear."""
    covered = [lv for lv in LEVELS if lv in plan.levels]
    k = min(int(rng.integers(3, 6)), len(covered))
    if k < 2:
        return
    levels = covered[::-1][:k]  # bottom up: L5/S1 (or the series' lowest level) first
    x0, y0 = orientation_axes(plan.iop)
    dr, dc = plan.spacing_rc
    c0 = plan.ipps.mean(axis=0) + (plan.cols - 1) / 2 * dc * x0 + (plan.rows - 1) / 2 * dr * y0
    for _ in range(100):
        iops = []
        for lv in levels:
            ax = anat.disc_axes[lv]
            rot = (_rotation(ax[0], rng.uniform(-1, 1) * SLAB_JITTER_DEG[0])
                   @ _rotation(ax[1], rng.uniform(-1, 1) * SLAB_JITTER_DEG[1]))
            f = ax @ rot.T
            iops.append(tuple(round(float(v), 6) for v in np.concatenate([f[0], f[1]])))
        normals = np.array([slice_normal(i) for i in iops])
        angles = np.degrees(np.arccos(np.clip(normals @ normals.T, -1, 1)))[np.triu_indices(k, 1)]
        if angles.min() >= MIN_SLAB_ANGLE_DEG:
            break
    ds = plan.slice_spacing_mm
    discs = [anat.disc_centres[lv] for lv in levels]
    sizes = [int(rng.integers(4, 9)) for _ in levels]
    for j in range(k - 1):
        nm = normals[j] + normals[j + 1]
        dist = abs(float((discs[j + 1] - discs[j]) @ (nm / np.linalg.norm(nm))))
        while (sizes[j] + sizes[j + 1] - 2) / 2 * ds + 2 * ds > dist and max(sizes[j], sizes[j + 1]) > 4:
            sizes[j if sizes[j] >= sizes[j + 1] else j + 1] -= 1
    stacks = []
    for lv, iop, normal, disc, n in zip(levels, iops, normals, discs, sizes):
        x, y = orientation_axes(iop)
        pts = np.array([anat.landmark(c, lv) for c in (SPINAL, LEFT_SS, RIGHT_SS)])
        cx = _clamp_in_plane(float(c0 @ x), pts, x, plan.cols * dc)
        cy = _clamp_in_plane(float(c0 @ y), pts, y, plan.rows * dr)
        stacks.append(_stack(iop, cx * x + cy * y + float(disc @ normal) * normal, plan.rows, plan.cols,
                             (dr, dc), n, ds))
    starts = np.cumsum([0] + sizes)
    top_down, flip_inside = rng.random() < 0.5, rng.random() < 0.3
    order = []
    for j in (range(k - 1, -1, -1) if top_down else range(k)):
        idx = list(range(starts[j], starts[j + 1]))
        natural = idx[::-1] if top_down else idx
        order += natural[::-1] if flip_inside else natural
    inst = np.empty(starts[-1], dtype=int)
    inst[order] = np.arange(1, starts[-1] + 1)
    plan.ipps, plan.instance_numbers = np.vstack(stacks), inst
    plan.iops = np.repeat(np.array(iops, dtype=np.float64), sizes, axis=0)
    plan.iop = iops[0]
    plan.matrices = np.tile([plan.rows, plan.cols], (starts[-1], 1))
    plan.spacings = np.tile(np.asarray(plan.spacing_rc, dtype=np.float64), (starts[-1], 1))
    plan.stack_ids = np.repeat(np.arange(k), sizes)
    plan.odd, plan.copy_of = np.zeros(starts[-1], dtype=bool), np.full(starts[-1], -1)
    plan.level_stacks = {lv: j for j, lv in enumerate(levels)}
    plan.levels = tuple(lv for lv in LEVELS if lv in levels)


def _odd_slices(rng, plan: SeriesPlan) -> None:
    """1-2 slices with another matrix (same spacing) or another PixelSpacing (same matrix), continuing
    the positions of the top stack past its far end at the series' slice spacing, numbered last."""
    m = 1 if rng.random() < 0.6 else 2
    kind = "matrix" if rng.random() < 0.5 else "spacing"
    main = plan.label_slices()
    top = plan.stack_ids[main].max()
    last = main[plan.stack_ids[main] == top][-1]
    ipp, iop, (dr, dc), rows, cols = plan.geometry(last)
    x, y = orientation_axes(iop)
    normal = slice_normal(iop)
    centre = ipp + (cols - 1) / 2 * dc * x + (rows - 1) / 2 * dr * y
    if kind == "matrix":
        rows = cols = int(rng.choice([v for v in ODD_MATRICES if v != rows]))
    else:
        f = rng.uniform(1.15, 1.45) if rng.random() < 0.5 else rng.uniform(0.7, 0.87)
        dr, dc = round(dr * f, 4), round(dc * f, 4)
    corner = centre - (cols - 1) / 2 * dc * x - (rows - 1) / 2 * dr * y
    ipps = np.round([corner + j * plan.slice_spacing_mm * normal for j in range(1, m + 1)], 4)
    first = int(plan.instance_numbers.max()) + 1
    plan._append(ipps, [iop] * m, [(rows, cols)] * m, [(dr, dc)] * m, plan.stack_ids.max() + 1,
                 np.arange(first, first + m), odd=True)
    plan.odd_kind = kind


def _repeat_position(rng, plan: SeriesPlan, targets) -> None:
    """One slice of the main stack(s) acquired again at the same position: half the time one a
    coordinate row points at (``targets``; the row keeps the original), numbered last or inserted
    right after the original (later numbers shift up)."""
    main = plan.label_slices()
    targets = sorted(targets)
    src = int(rng.choice(targets)) if targets and rng.random() < 0.5 else int(rng.choice(main))
    if rng.random() < 0.5:
        new = int(plan.instance_numbers[src]) + 1
        plan.instance_numbers = np.where(plan.instance_numbers >= new, plan.instance_numbers + 1,
                                         plan.instance_numbers)
    else:
        new = int(plan.instance_numbers.max()) + 1
    plan._append(plan.ipps[src][None], plan.iops[src][None], plan.matrices[src][None], plan.spacings[src][None],
                 plan.stack_ids[src], [new], copy_of=src)


def plan_study(rng, anat: StudyAnatomy, series_ids, variety: Variety = Variety(), blank=None,
               quirk_rng=None) -> tuple[list, dict]:
    """The study's series plans (Sag T1, Sag T2/STIR, one or two Axial T2, sometimes a second series of
    a sagittal view) and what was chosen. The series quirks are drawn from ``quirk_rng`` (default
    ``rng``); ``blank`` (the label blank mask) steers repeated positions onto labelled slices."""
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
    q = rng if quirk_rng is None else quirk_rng
    repeated = None
    if not two_axial and q.random() < variety.repeated_sagittal:
        views = [v for v in (SAG_T1, SAG_T2) if v != missing]
        repeated = views[int(q.integers(len(views)))]
        extra = _sagittal(q, anat, repeated, next(ids), variety.stir)
        _appearance(q, extra, variety)
        plans.insert(max(i for i, p in enumerate(plans) if p.view == repeated) + 1, extra)
    two_axial = sum(p.view == AX_T2 for p in plans) == 2
    if two_axial:
        repeated = AX_T2
    for p in plans:
        if p.view == AX_T2 and q.random() < variety.angled_slabs:
            _angled_slabs(q, anat, p)
        p.write_thickness = not q.random() < variety.no_thickness_tags
        if q.random() < variety.odd_slices:
            _odd_slices(q, p)
    blank = np.zeros((len(CONDITIONS), len(LEVELS)), dtype=bool) if blank is None else blank
    targets: dict = {}
    for plan, k, *_ in _label_hits(anat, plans, blank):
        targets.setdefault(plan.series_id, set()).add(k)
    for p in plans:
        if q.random() < variety.repeated_position:
            _repeat_position(q, p, targets.get(p.series_id, ()))
    return plans, {"two_axial": two_axial, "missing_view": missing, "repeated_view": repeated}


def _label_hits(anat: StudyAnatomy, plans: list, blank: np.ndarray):
    """(plan, slice index, condition, level, col, row) of every labelled cell whose view and level exist:
    the first series of the view covering the level, the nearest slice of its stack (or level's slab)."""
    for i, cond in enumerate(CONDITIONS):
        for j, lv in enumerate(LEVELS):
            cands = [p for p in plans if p.view == CONDITION_VIEW[cond] and lv in p.levels]
            if blank[i, j] or not cands:
                continue
            plan = cands[0]
            k, col, row = plan.nearest_slice(anat.landmark(cond, lv), lv)
            rows, cols = plan.matrices[k]
            assert 0 <= col <= cols - 1 and 0 <= row <= rows - 1, (cond, lv, col, row)
            yield plan, k, cond, lv, col, row


def coordinate_rows(anat: StudyAnatomy, plans: list, blank: np.ndarray) -> list[tuple]:
    """(series_id, instance_number, condition, level, x, y) of every labelled cell whose view exists
    (and, on an angled-slab axial series, whose level has a slab)."""
    return [(plan.series_id, int(plan.instance_numbers[k]), cond, lv, round(col, 1), round(row, 1))
            for plan, k, cond, lv, col, row in _label_hits(anat, plans, blank)]
