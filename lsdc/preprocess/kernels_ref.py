"""Plain vectorised NumPy versions of the kernels in ``kernels.py``: the specification by example.

Tests check the kernels against these; ``kernel_bench.py`` times both. Same conventions as kernels.py
(pixel centres at integer coordinates, border replicate, window rounds to the nearest grey level).
"""
from __future__ import annotations

import numpy as np


def series_window_ref(stack, low_pct, high_pct):
    lo, hi = np.percentile(stack, [low_pct, high_pct])
    return float(lo), float(hi)


def normalize_uint8_ref(stack, lo, hi):
    if hi <= lo:
        return np.zeros(stack.shape, np.uint8)
    return np.clip(np.rint((stack - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def bilinear_ref(stack, z, x, y):
    """Samples of slices ``z`` (n,) at points (x=col, y=row) of any equal shape -> (n, *x.shape)."""
    h, w = stack.shape[1:]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.floor(x).astype(np.intp)
    y0 = np.floor(y).astype(np.intp)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = x - x0
    fy = y - y0
    z = np.asarray(z).reshape((-1,) + (1,) * x.ndim)
    top = stack[z, y0, x0] + (stack[z, y0, x1] - stack[z, y0, x0]) * fx
    bottom = stack[z, y1, x0] + (stack[z, y1, x1] - stack[z, y1, x0]) * fx
    return top + (bottom - top) * fy


def crop_stack_ref(stack, slice_idx, center_col, center_row, spacing_row_mm, spacing_col_mm, box_mm,
                   out_px, angle_rad, lo, hi):
    z = np.clip(np.asarray(slice_idx), 0, stack.shape[0] - 1)
    offsets = (np.arange(out_px) + 0.5 - out_px / 2) * (box_mm / out_px)
    v, u = np.meshgrid(offsets, offsets, indexing="ij")  # (row i, col j) grids
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    x = center_col + (u * c - v * s) / spacing_col_mm
    y = center_row + (u * s + v * c) / spacing_row_mm
    return normalize_uint8_ref(bilinear_ref(stack, z, x, y), lo, hi)


def crop_boxes_ref(stack, slice_idx, centers, spacing_row_mm, spacing_col_mm, box_mm, out_px, lo, hi):
    return np.stack([crop_stack_ref(stack, idx, c[0], c[1], spacing_row_mm, spacing_col_mm, box_mm, out_px,
                                    0.0, lo, hi) for idx, c in zip(slice_idx, centers)])


def resample_volume_ref(stack, out_slices, out_px, lo, hi):
    n_slices, h, w = stack.shape
    if out_slices > 1:
        z = np.linspace(0, n_slices - 1, out_slices)
    else:
        z = np.array([(n_slices - 1) / 2.0])
    z0 = np.minimum(np.floor(z).astype(np.intp), n_slices - 1)
    z1 = np.minimum(z0 + 1, n_slices - 1)
    fz = (z - z0)[:, None, None]
    y, x = np.meshgrid((np.arange(out_px) + 0.5) * (h / out_px) - 0.5,
                       (np.arange(out_px) + 0.5) * (w / out_px) - 0.5, indexing="ij")
    # Resize each needed source slice once, then interpolate between slices.
    needed, inverse = np.unique(np.concatenate([z0, z1]), return_inverse=True)
    planes = bilinear_ref(stack, needed, x, y)
    a, b = planes[inverse[: z.size]], planes[inverse[z.size:]]
    return normalize_uint8_ref(a + (b - a) * fz, lo, hi)
