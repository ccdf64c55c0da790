"""DICOM patient-coordinate geometry (LPS, millimetres), shared by synth, converter and localiser.

ImageOrientationPatient = (X, Y): X is the direction in which the column index grows, Y the direction
in which the row index grows. PixelSpacing = (row spacing, column spacing) = (mm along Y, mm along X).
Pixel (col, row) of a slice at ImagePositionPatient P0 sits at ``P0 + col*dx*X + row*dy*Y``.
"""
from __future__ import annotations

import numpy as np


def orientation_axes(iop) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y) unit vectors from the 6 ImageOrientationPatient numbers."""
    v = np.asarray(iop, dtype=np.float64).reshape(2, 3)
    x = v[0] / np.linalg.norm(v[0])
    y = v[1] / np.linalg.norm(v[1])
    return x, y


def slice_normal(iop) -> np.ndarray:
    """Unit normal X x Y of the image plane; slices are ordered by IPP projected on it."""
    x, y = orientation_axes(iop)
    n = np.cross(x, y)
    return n / np.linalg.norm(n)


def pixel_to_patient(ipp, iop, spacing_rc, col, row) -> np.ndarray:
    """Patient point (mm) of pixel (col, row); col/row may be arrays (result has a trailing 3 axis)."""
    x, y = orientation_axes(iop)
    col = np.asarray(col, dtype=np.float64)[..., None]
    row = np.asarray(row, dtype=np.float64)[..., None]
    return np.asarray(ipp, dtype=np.float64) + col * float(spacing_rc[1]) * x + row * float(spacing_rc[0]) * y


def patient_to_pixel(ipp, iop, spacing_rc, point) -> tuple[float, float, float]:
    """(col, row, offset_mm) of a patient point on a slice; offset is its distance along the normal."""
    x, y = orientation_axes(iop)
    d = np.asarray(point, dtype=np.float64) - np.asarray(ipp, dtype=np.float64)
    col = float(d @ x) / float(spacing_rc[1])
    row = float(d @ y) / float(spacing_rc[0])
    return col, row, float(d @ np.cross(x, y))


def locate_in_stack(point, positions, slice_positions_mm, iop, spacing_rc) -> tuple[float, float, float]:
    """(fractional slice index, col, row) of a patient point in a spatially sorted stack.

    The index interpolates between slice positions along the normal (extrapolating past the ends);
    col/row are on the nearest slice's plane.
    """
    z = np.asarray(slice_positions_mm, dtype=np.float64)
    s = float(np.asarray(point, dtype=np.float64) @ slice_normal(iop))
    if s < z[0]:
        idx = (s - z[0]) / (z[1] - z[0])
    elif s > z[-1]:
        idx = len(z) - 1 + (s - z[-1]) / (z[-1] - z[-2])
    else:
        idx = float(np.interp(s, z, np.arange(len(z))))
    nearest = int(np.clip(round(idx), 0, len(z) - 1))
    col, row, _ = patient_to_pixel(positions[nearest], iop, spacing_rc, point)
    return idx, col, row
