"""A series split into stacks: the unit every stage reads slices from.

Real series are not one tidy stack. An Axial T2 series is often several slabs at different angles (one
per disc level, numbered slab after slab), some series carry a few slices of another matrix or pixel
spacing, some hold a repeated position, and a file can be damaged. So a series is split into
**stacks**, by these rules (one implementation, used by the converter, the localiser volumes and the
axial projection of ``lsdc predict``):

1. Slices that share orientation (each ImageOrientationPatient cosine within ``ORIENTATION_TOL``),
   matrix (Rows x Columns) and PixelSpacing (within ``SPACING_TOL_MM``) form one group.
2. A group is sorted along its own normal (ImagePositionPatient projected on X x Y): never by file
   name or InstanceNumber, and never using SliceThickness or SpacingBetweenSlices.
3. Two slices closer than ``DUPLICATE_MM`` along the normal are one position: the labelled instance
   is kept if one of them is labelled, else the higher InstanceNumber; the other is recorded as a
   note (``duplicate_collapsed``), not a skip.
4. A gap between neighbours larger than ``GAP_SPLIT`` x the group's median spacing splits it, so a
   slice's neighbours never jump over missing anatomy.
5. Stacks are numbered in spatial order: by their centres projected on the normal of the series'
   largest stack.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import geometry

ORIENTATION_TOL = 0.01  # direction cosines differing by more (~0.6 degrees) are another orientation
SPACING_TOL_MM = 1e-3  # PixelSpacing values differing by more are another pixel grid
DUPLICATE_MM = 0.01  # two slices closer than this along the normal are the same position
GAP_SPLIT = 1.5  # a gap larger than this x the median spacing splits a stack
MIN_STACK_SLICES = 2  # fewer: no slice spacing, no slab extent (``one_slice``)


@dataclass
class Stack:
    """Slices of one series sharing orientation, matrix and pixel spacing, contiguous along their
    normal, in spatial order (ascending ``z_mm``). ``volume`` is None when read from headers only."""

    series_id: int | None
    index: int  # the stack's index within its series, in spatial order
    iop: np.ndarray  # (6,) ImageOrientationPatient
    spacing_rc: tuple  # (row mm, column mm)
    rows: int
    cols: int
    positions: np.ndarray  # (n, 3) ImagePositionPatient per slice
    instance_numbers: np.ndarray  # (n,) int64
    z_mm: np.ndarray  # (n,) positions on the normal, ascending
    files: list = field(default_factory=list)  # Path per slice
    volume: np.ndarray | None = None  # float32 [n, rows, cols] rescaled intensities

    @property
    def n_slices(self) -> int:
        return len(self.instance_numbers)

    @property
    def normal(self) -> np.ndarray:
        return geometry.slice_normal(self.iop)

    @property
    def slice_spacing_mm(self) -> float:
        """Median centre-to-centre distance between neighbouring slices (nan with one slice)."""
        return float(np.median(np.diff(self.z_mm))) if self.n_slices > 1 else float("nan")

    @property
    def usable(self) -> bool:
        return self.n_slices >= MIN_STACK_SLICES

    def slice_of(self, instance_number: int) -> int | None:
        """Index of the slice with this InstanceNumber, or None."""
        hits = np.flatnonzero(self.instance_numbers == int(instance_number))
        return int(hits[0]) if hits.size else None

    def pixel_to_patient(self, slice_idx: int, col, row) -> np.ndarray:
        """Patient point (mm, LPS) of pixel (col, row) on slice ``slice_idx``."""
        return geometry.pixel_to_patient(self.positions[slice_idx], self.iop, self.spacing_rc, col, row)

    def locate(self, point) -> tuple[float, float, float]:
        """(fractional slice index, col, row on the nearest slice) of a patient point."""
        return geometry.locate_in_stack(point, self.positions, self.z_mm, self.iop, self.spacing_rc)

    def coverage(self, point) -> tuple[bool, float, float, float, int]:
        """Does the slab contain ``point``? (contains, distance to the nearest slice plane in mm,
        col, row, nearest slice). Contained: within half a slice gap of its nearest plane (the
        neighbouring gap on each side; half the end gap past the ends) and inside that image."""
        s = float(np.asarray(point, np.float64) @ self.normal)
        j = int(np.argmin(np.abs(self.z_mm - s)))
        d = s - self.z_mm[j]
        gaps = np.diff(self.z_mm)
        if self.n_slices < 2:
            half = 0.0
        elif d >= 0:
            half = gaps[min(j, len(gaps) - 1)] / 2
        else:
            half = gaps[max(j - 1, 0)] / 2
        col, row, _ = geometry.patient_to_pixel(self.positions[j], self.iop, self.spacing_rc, point)
        inside = abs(d) <= half and 0 <= col <= self.cols - 1 and 0 <= row <= self.rows - 1
        return bool(inside), abs(float(d)), float(col), float(row), j


@dataclass
class Split:
    """How a series' slices (given as headers) fall into stacks."""

    stacks: list  # per stack: list of header indices in spatial order
    alias: dict  # InstanceNumber of a collapsed duplicate -> InstanceNumber kept at its position


def _same_grid(a, b) -> bool:
    return ((a.rows, a.cols) == (b.rows, b.cols)
            and all(abs(x - y) <= ORIENTATION_TOL for x, y in zip(a.iop, b.iop))
            and all(abs(x - y) <= SPACING_TOL_MM for x, y in zip(a.spacing_rc, b.spacing_rc)))


def _centre(h) -> np.ndarray:
    """Patient point of the image centre of a header's slice."""
    return geometry.pixel_to_patient(h.ipp, h.iop, h.spacing_rc, (h.cols - 1) / 2, (h.rows - 1) / 2)


def split_stacks(headers: list, keep_instances=()) -> Split:
    """Split slice headers (anything with ``ipp``, ``iop``, ``spacing_rc``, ``rows``, ``cols``,
    ``instance_number``) into stacks by the module's rules; ``keep_instances`` are the labelled
    InstanceNumbers (kept when a duplicate position is collapsed)."""
    keep = {int(v) for v in keep_instances}
    groups: list[list[int]] = []
    for i, h in enumerate(headers):  # greedy, against each group's first slice
        for g in groups:
            if _same_grid(headers[g[0]], h):
                g.append(i)
                break
        else:
            groups.append([i])
    stacks, alias = [], {}
    for g in groups:
        normal = geometry.slice_normal(headers[g[0]].iop)
        z = np.array([np.asarray(headers[i].ipp, np.float64) @ normal for i in g])
        order = [g[k] for k in np.argsort(z, kind="stable")]
        zs = np.sort(z, kind="stable")
        kept, kept_z = [], []
        for i, zi in zip(order, zs):
            if kept and zi - kept_z[-1] < DUPLICATE_MM:
                prev = kept[-1]
                rank = lambda j: (headers[j].instance_number in keep, headers[j].instance_number)
                win, lose = (i, prev) if rank(i) > rank(prev) else (prev, i)
                kept[-1] = win
                lost, won = int(headers[lose].instance_number), int(headers[win].instance_number)
                alias = {k: (won if v == lost else v) for k, v in alias.items()}  # a chain: the last survivor
                alias[lost] = won
                continue
            kept.append(i)
            kept_z.append(zi)
        gaps = np.diff(kept_z)
        cut = GAP_SPLIT * float(np.median(gaps)) if len(gaps) else np.inf
        start = 0
        for k, gap in enumerate(gaps):
            if gap > cut:
                stacks.append(kept[start:k + 1])
                start = k + 1
        stacks.append(kept[start:])
    ref = max(stacks, key=len)
    ref_normal = geometry.slice_normal(headers[ref[0]].iop)
    stacks.sort(key=lambda st: float(np.mean([_centre(headers[i]) for i in st], axis=0) @ ref_normal))
    return Split(stacks, alias)


def make_stack(headers: list, members: list, series_id, index: int, volume=None) -> Stack:
    """The :class:`Stack` of ``members`` (header indices, spatial order)."""
    first = headers[members[0]]
    iop = np.asarray(first.iop, np.float64)
    positions = np.array([headers[i].ipp for i in members], np.float64)
    return Stack(series_id=series_id, index=index, iop=iop, spacing_rc=tuple(first.spacing_rc),
                 rows=int(first.rows), cols=int(first.cols), positions=positions,
                 instance_numbers=np.array([headers[i].instance_number for i in members], np.int64),
                 z_mm=positions @ geometry.slice_normal(iop), files=[headers[i].path for i in members],
                 volume=volume)
