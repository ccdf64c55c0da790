"""Render a phantom: paint its primitives once into a coarse 3-D volume, then sample slices from it.

The volume holds premultiplied colour (one channel per sequence) and opacity; a slice pixel is
``background * (1 - alpha) + colour`` where the analytic body background fills everything the spine
does not cover, so the volume only needs to span the spine. Slice thickness is integrated coarsely by
box-filtering the volume along the
slice normal's nearest axis once per series (:func:`slab`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates, uniform_filter1d

from ..core.geometry import orientation_axes, pixel_to_patient, slice_normal
from .phantom import CYL, SEQUENCES, TISSUES, StudyAnatomy

EDGE_MM = 0.8  # width of the soft edge of every primitive


@dataclass
class Volume:
    origin: np.ndarray   # patient mm of voxel (0, 0, 0)
    voxel_mm: float
    sequences: tuple     # channel order of ``colour``
    colour: np.ndarray   # (len(sequences), nx, ny, nz) float32, premultiplied
    alpha: np.ndarray    # (nx, ny, nz) float32


def _extent(prim) -> np.ndarray:
    """Half extent of a primitive along the patient axes (conservative box)."""
    return np.abs(prim.axes * prim.half[:, None]).sum(axis=0) + EDGE_MM


def paint(anatomy: StudyAnatomy, sequences=SEQUENCES, voxel_mm: float = 1.0) -> Volume:
    """Paint all primitives, in order, into a volume spanning them."""
    prims = anatomy.primitives
    lo = np.min([p.centre - _extent(p) for p in prims], axis=0) - 2 * voxel_mm
    hi = np.max([p.centre + _extent(p) for p in prims], axis=0) + 2 * voxel_mm
    shape = tuple(int(v) for v in np.ceil((hi - lo) / voxel_mm) + 1)
    chans = [SEQUENCES.index(s) for s in sequences]
    colour = np.zeros((len(chans),) + shape, np.float32)
    alpha = np.zeros(shape, np.float32)
    grid = [lo[i] + voxel_mm * np.arange(shape[i], dtype=np.float64) for i in range(3)]
    for p in prims:
        ext = _extent(p)
        i0 = np.maximum(np.floor((p.centre - ext - lo) / voxel_mm).astype(int), 0)
        i1 = np.minimum(np.ceil((p.centre + ext - lo) / voxel_mm).astype(int) + 1, shape)
        if np.any(i1 <= i0):
            continue
        d = [(grid[i][i0[i]:i1[i]] - p.centre[i]).astype(np.float32) for i in range(3)]
        dx, dy, dz = d[0][:, None, None], d[1][None, :, None], d[2][None, None, :]
        l0, l1, l2 = ((a[0] * dx + a[1] * dy + a[2] * dz) / h for a, h in zip(p.axes.astype(np.float32), p.half))
        f = _occupancy(l0, l1, l2, p.p, p.q, float(p.half.min()))
        sl = tuple(slice(a, b) for a, b in zip(i0, i1))
        values = p.intensity if p.intensity is not None else TISSUES[p.tissue]
        table = anatomy.tissue[p.tissue] * (np.asarray(values) / np.asarray(TISSUES[p.tissue]))
        for ci, k in enumerate(chans):
            block = colour[(ci,) + sl]
            block += f * (np.float32(table[k]) - block)
        a = alpha[sl]
        a += f * (1 - a)
    return Volume(lo, voxel_mm, tuple(sequences), colour, alpha)


def _occupancy(l0, l1, l2, p, q, r_min):
    """Soft inside-ness in [0, 1] from normalised local coordinates (1 on the surface)."""
    if p == 2:
        t = l0 * l0 + l1 * l1
    else:  # p == 4
        t = np.sqrt((l0 * l0) ** 2 + (l1 * l1) ** 2)
    if q == CYL:
        rho = np.maximum(np.sqrt(t), np.abs(l2))
    elif q == 2:
        rho = np.sqrt(t + l2 * l2)
    else:
        rho = (t ** (q / 2) + np.abs(l2) ** q) ** (1.0 / q)
    return np.clip(0.5 - (rho - 1) * (r_min / EDGE_MM), 0, 1)


def slab(volume: Volume, sequence: str, iop, thickness_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(colour, alpha) of one sequence box-averaged over the slice thickness along the volume axis
    nearest the slice normal: every slice of a series then needs one sample per pixel."""
    axis = int(np.argmax(np.abs(slice_normal(iop))))
    size = max(1, int(round(thickness_mm / volume.voxel_mm)))
    ch = volume.colour[volume.sequences.index(sequence)]
    if size == 1:
        return ch, volume.alpha
    return (uniform_filter1d(ch, size, axis=axis, mode="constant"),
            uniform_filter1d(volume.alpha, size, axis=axis, mode="constant"))


def sample_slice(volume: Volume, slab_: tuple, anatomy: StudyAnatomy, sequence: str, ipp, iop, spacing_rc,
                 rows: int, cols: int) -> np.ndarray:
    """(rows, cols) float32 relative intensity of one slice from a :func:`slab` of the volume."""
    out = _background(anatomy, sequence, ipp, iop, spacing_rc, rows, cols)
    x, y = orientation_axes(iop)
    a = int(np.argmax(np.abs(x)))
    if abs(abs(x[a]) - 1) < 1e-9 and abs(y[a]) < 1e-9:
        colour, alpha = _sample_aligned(volume, slab_, a, ipp, iop, spacing_rc, rows, cols)
    else:
        colour, alpha = _sample_general(volume, slab_, ipp, iop, spacing_rc, rows, cols)
    return out * (1 - alpha) + colour


def _plane(ipp, iop, spacing_rc, rows, cols):
    """(rows, cols, 3) float32 patient points of a pixel grid (pixel indices may be fractional)."""
    first_row = pixel_to_patient(ipp, iop, spacing_rc, cols, 0).astype(np.float32)
    down = (pixel_to_patient(ipp, iop, spacing_rc, 0, rows) - np.asarray(ipp, float)).astype(np.float32)
    return first_row[None, :, :] + down[:, None, :]  # the plane is affine in (col, row)


def _background(anatomy, sequence, ipp, iop, spacing_rc, rows, cols, stride=2):
    """Analytic background on every ``stride``-th pixel, linearly upsampled (it has no sharp edges)."""
    rr = np.arange(0, rows - 1 + stride, stride)
    cc = np.arange(0, cols - 1 + stride, stride)
    coarse = anatomy.background(_plane(ipp, iop, spacing_rc, rr, cc), sequence)
    coarse = _lerp(coarse, np.arange(rows, dtype=np.float32) / stride, axis=0)
    return _lerp(coarse, np.arange(cols, dtype=np.float32) / stride, axis=1)


def _lerp(arr, pos, axis):
    """Linear interpolation of ``arr`` at fractional indices ``pos`` along ``axis``; 0 outside."""
    n = arr.shape[axis]
    i0 = np.floor(pos).astype(np.int64)
    w1 = (pos - i0).astype(np.float32)
    out = 0
    for i, w in ((i0, 1 - w1), (i0 + 1, w1)):
        w = np.where((i >= 0) & (i < n), w, 0).astype(np.float32)
        shape = [1] * arr.ndim
        shape[axis] = -1
        out = out + np.take(arr, np.clip(i, 0, n - 1), axis=axis) * w.reshape(shape)
    return out


def _sample_aligned(volume, slab_, a, ipp, iop, spacing_rc, rows, cols):
    """Columns run along volume axis ``a``: bilinear per row across the other two axes, then linear
    along ``a``; equivalent to trilinear sampling, and much cheaper."""
    idx = (pixel_to_patient(ipp, iop, spacing_rc, 0, np.arange(rows)) - volume.origin) / volume.voxel_mm
    b, c = [i for i in range(3) if i != a]
    x, _ = orientation_axes(iop)
    t = idx[0, a] + x[a] * spacing_rc[1] / volume.voxel_mm * np.arange(cols)
    out = []
    for vol in slab_:
        v = np.moveaxis(vol, a, -1)  # (n_b, n_c, n_a)
        nb, nc, _ = v.shape
        b0, c0 = np.floor(idx[:, b]).astype(np.int64), np.floor(idx[:, c]).astype(np.int64)
        wb, wc = (idx[:, b] - b0).astype(np.float32), (idx[:, c] - c0).astype(np.float32)
        lines = 0
        for bi, wbi in ((b0, 1 - wb), (b0 + 1, wb)):
            for ci, wci in ((c0, 1 - wc), (c0 + 1, wc)):
                ok = (bi >= 0) & (bi < nb) & (ci >= 0) & (ci < nc)
                w = np.where(ok, wbi * wci, 0).astype(np.float32)
                lines = lines + v[np.clip(bi, 0, nb - 1), np.clip(ci, 0, nc - 1)] * w[:, None]
        out.append(_lerp(lines, t, axis=1))
    return out


def _sample_general(volume, slab_, ipp, iop, spacing_rc, rows, cols):
    """Any orientation: trilinear sampling of every pixel with map_coordinates."""
    pts = _plane(ipp, iop, spacing_rc, np.arange(rows), np.arange(cols))
    idx = np.moveaxis((pts - volume.origin.astype(np.float32)) / np.float32(volume.voxel_mm), -1, 0)
    return [map_coordinates(vol, idx, order=1, prefilter=False, mode="constant", cval=0.0) for vol in slab_]


def bias_field(bias: tuple, rows: int, cols: int) -> np.ndarray:
    """Smooth multiplicative coil sensitivity exp(a*u + b*v + c*(u^2 + v^2)), u, v in [-1, 1]."""
    u = np.linspace(-1, 1, cols, dtype=np.float32)[None, :]
    v = np.linspace(-1, 1, rows, dtype=np.float32)[:, None]
    a, b, c = (np.float32(t) for t in bias)
    return np.exp(a * u + b * v + c * (u * u + v * v))


def acquire(rel: np.ndarray, scale: float, noise: float, field: np.ndarray, rng) -> np.ndarray:
    """Physical image of a relative-intensity slice: bias field, Rician noise, intensity scale."""
    re = rel * field + np.float32(noise) * rng.standard_normal(rel.shape, dtype=np.float32)
    im = np.float32(noise) * rng.standard_normal(rel.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im) * np.float32(scale)
