"""Numba kernels of the DICOM -> crop conversion: pure array functions, one NumPy reference each.

The references live in ``kernels_ref.py`` (tests compare against them, ``kernel_bench.py`` times them).
Every kernel also runs as plain Python under ``NUMBA_DISABLE_JIT=1`` (slow: debug-sized inputs only).

Conventions shared by all kernels:
- ``stack`` is a C-contiguous float32 series ``[S, H, W]`` in spatial slice order, finite values.
- Pixel coordinates are (col, row) = (x, y) with integer values at pixel centres, as in the
  competition's label coordinates; sampling is bilinear, and positions outside the image take the
  nearest edge pixel (border replicate; clamping the coordinate first is exactly that).
- The intensity window ``(lo, hi)`` maps ``lo`` -> 0 and ``hi`` -> 255, clipped, rounded half up;
  it is applied in the same pass as the sampling. ``hi <= lo`` (a flat series) gives all zeros.
"""
from __future__ import annotations

from . import numba_setup  # noqa: F401  (threading layer and cache dir before any kernel compiles)

import math

import numpy as np
from numba import get_num_threads, njit, prange

_SAMPLE = 16384  # voxels drawn to place the brackets around each wanted rank
_MARGIN_SIGMA = 6.0  # bracket half-width in standard errors of the sample quantile's rank
_GOLDEN = 0.6180339887498949
_COUNT_BLOCK = 1 << 16  # float32 tallies stay exact below 2**24
_GATHER_BLOCK = 256


# ---------------------------------------------------------------------------------------------------
# series_window: exact percentiles by bracketing (Floyd-Rivest style selection).
# A deterministic sample places a bracket [a, b] around each wanted rank. One streaming pass counts
# the voxels < a, <= a, < b and <= b (below, tied at a, inside, tied at b); a second pass copies the
# few strictly inside, and is skipped when the rank falls on a tie (e.g. the zero background).
# Why: np.percentile partitions a full copy of the series; this reads it twice, writes almost
# nothing, and stays exact (a missed bracket falls back to a full partition).

def _chunk_bounds(n, n_threads):
    """Bounds of one contiguous chunk per thread (small series: fewer chunks)."""
    t = max(1, min(n_threads, n // 65536 + 1))
    return np.linspace(0, n, t + 1).astype(np.int64)


@njit(cache=True, fastmath={"reassoc", "nsz", "contract"})  # vectorised sums; inf bounds stay valid
def _count_chunk(chunk, a0, b0, a1, b1):
    """Per bracket: voxels < a, <= a, < b, <= b. Branch-free float32 tallies, exact per block of
    2**16 (< 2**24), vectorise fully: this pass runs at memory speed."""
    out = np.zeros(8, np.int64)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for start in range(0, chunk.size, _COUNT_BLOCK):
        block = chunk[start:start + _COUNT_BLOCK]
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = zero
        for i in range(block.size):  # range(size), not range(lo, hi): no index wraparound checks
            v = block[i]
            c0 += one if v < a0 else zero
            c1 += one if v <= a0 else zero
            c2 += one if v < b0 else zero
            c3 += one if v <= b0 else zero
            c4 += one if v < a1 else zero
            c5 += one if v <= a1 else zero
            c6 += one if v < b1 else zero
            c7 += one if v <= b1 else zero
        out[0] += int(c0)
        out[1] += int(c1)
        out[2] += int(c2)
        out[3] += int(c3)
        out[4] += int(c4)
        out[5] += int(c5)
        out[6] += int(c6)
        out[7] += int(c7)
    return out


@njit(parallel=True, cache=True)
def _count_brackets(flat, bounds, a0, b0, a1, b1):
    """int64 [chunks, 8]: _count_chunk of every chunk."""
    counts = np.zeros((bounds.size - 1, 8), np.int64)
    for c in prange(bounds.size - 1):
        counts[c] = _count_chunk(flat[bounds[c]:bounds[c + 1]], a0, b0, a1, b1)
    return counts


@njit(cache=True, fastmath={"reassoc", "nsz", "contract"})
def _gather_chunk(chunk, a, b, out):
    """Copy the voxels strictly inside (a, b) to ``out``. A vectorised test of each block of 256 skips
    the (scalar) copy loop where a block holds none: on MR data the tail voxels cluster in space."""
    n = 0
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for start in range(0, chunk.size, _GATHER_BLOCK):
        block = chunk[start:start + _GATHER_BLOCK]
        hits = zero
        for i in range(block.size):
            v = block[i]
            hits += one if (v > a) & (v < b) else zero
        if hits > zero:
            for i in range(block.size):
                v = block[i]
                if v > a and v < b:
                    out[n] = v
                    n += 1


@njit(parallel=True, cache=True)
def _gather_inside(flat, bounds, a, b, inside_per_chunk):
    """All voxels strictly inside (a, b); each chunk writes at its offset from the counting pass."""
    offsets = np.zeros(inside_per_chunk.size + 1, np.int64)
    offsets[1:] = np.cumsum(inside_per_chunk)
    out = np.empty(offsets[-1], flat.dtype)
    for c in prange(bounds.size - 1):
        _gather_chunk(flat[bounds[c]:bounds[c + 1]], a, b, out[offsets[c]:offsets[c + 1]])
    return out


def _bracket(sample, q):
    """(a, b) from the sorted sample enclosing the q-quantile (q in [0, 1]); -inf/+inf past its ends."""
    m = sample.size
    margin = _MARGIN_SIGMA * math.sqrt(m * q * (1.0 - q)) + 8.0
    i = math.floor(q * (m - 1) - margin)
    j = math.ceil(q * (m - 1) + margin)
    a = sample[i] if i >= 0 else -np.inf
    b = sample[j] if j < m else np.inf
    return np.float32(a), np.float32(b)  # float32 like the voxels: exact ties, full SIMD width


def _order_stats(ranks, a, b, below, at_a, at_b, inside):
    """Values of two adjacent 0-based ranks from a bracket's counts and its inside voxels; None
    where the bracket missed a rank."""
    values = []
    ordered = inside
    first = ranks[0] - below - at_a
    if 0 <= first < inside.size:
        ordered = np.partition(inside, first)  # one selection serves both ranks
    for rank in ranks:
        r = rank - below
        if 0 <= r < at_a:
            values.append(float(a))
        elif 0 <= r - at_a < inside.size:
            j = r - at_a
            values.append(float(ordered[j] if j == first else ordered[j:].min()))  # [first+1:] >= rank first
        elif 0 <= r - at_a - inside.size < at_b:
            values.append(float(b))
        else:
            return None
    return values


def window_voxels(stack, max_voxels: int):
    """The voxels a series window is computed from: all of ``stack`` [S, H, W] (flattened, no copy)
    when it has at most ``max_voxels`` (or ``max_voxels`` is 0), else the regular lattice
    ``flat[::k]`` with the smallest k >= size / max_voxels that shares no factor with W, so that
    consecutive rows start at different columns and every slice, row and column is sampled."""
    flat = np.ascontiguousarray(stack, dtype=np.float32).reshape(-1)
    if max_voxels <= 0 or flat.size <= max_voxels:
        return flat
    k = -(-flat.size // max_voxels)
    while math.gcd(k, stack.shape[-1]) != 1:
        k += 1
    return np.ascontiguousarray(flat[::k])


def series_window(stack, low_pct, high_pct):
    """(lo, hi): the ``low_pct`` and ``high_pct`` percentiles of all voxels of ``stack`` [S, H, W].

    Whole-series statistics, so every slice of a series gets the same grey mapping. Equal to
    ``np.percentile(stack, [low_pct, high_pct])`` (its linear interpolation between order statistics)
    up to float rounding. The two streaming passes are parallel Numba kernels; this driver only does
    O(sample) work, in NumPy, whose sort and partition beat Numba's on these small arrays.
    """
    flat = np.ascontiguousarray(stack, dtype=np.float32).reshape(-1)
    n = flat.size
    if n == 0:
        raise ValueError("series_window: empty stack")
    if not (0.0 <= low_pct <= 100.0 and 0.0 <= high_pct <= 100.0):
        raise ValueError(f"series_window: percentiles must lie in [0, 100], got {low_pct}, {high_pct}")
    bounds = _chunk_bounds(n, get_num_threads())
    m = min(_SAMPLE, n)
    # Golden-ratio (low-discrepancy) positions: spread over the whole series, deterministic, and
    # no global RNG is touched.
    positions = np.minimum(((np.arange(m) + 0.5) * _GOLDEN % 1.0 * n).astype(np.int64), n - 1)
    sample = np.sort(flat[positions])
    qs = (low_pct / 100.0, high_pct / 100.0)
    (a0, b0), (a1, b1) = _bracket(sample, qs[0]), _bracket(sample, qs[1])
    counts = _count_brackets(flat, bounds, a0, b0, a1, b1)
    inside_per_chunk = np.maximum(counts[:, 2::4] - counts[:, 1::4], 0)  # #(a < v < b) per chunk, per bracket
    result = []
    for p, (a, b) in enumerate(((a0, b0), (a1, b1))):
        lt_a, le_a, lt_b, le_b = counts[:, 4 * p: 4 * p + 4].sum(axis=0).tolist()
        below, at_a, n_inside, at_b = lt_a, le_a - lt_a, max(lt_b - le_a, 0), le_b - max(lt_b, le_a)
        h = qs[p] * (n - 1)  # np.percentile's linear method: fractional rank h
        ranks = (min(math.floor(h), n - 1), min(math.floor(h) + 1, n - 1))
        first_inside = below + at_a
        inside = flat[:0]
        if n_inside and ranks[1] >= first_inside and ranks[0] < first_inside + n_inside:
            inside = _gather_inside(flat, bounds, a, b, np.ascontiguousarray(inside_per_chunk[:, p]))
        v = _order_stats(ranks, a, b, below, at_a, at_b, inside)
        if v is None:  # the bracket missed (odds ~1e-9 at 6 sigma): exact, slow fallback
            v = [float(x) for x in np.partition(flat, ranks)[list(ranks)]]
        result.append(v[0] + (v[1] - v[0]) * (h - ranks[0]))
    return result[0], result[1]


# ---------------------------------------------------------------------------------------------------
# Shared per-pixel helpers: one sampler, one window, used by every kernel below.

@njit(cache=True, inline="always")
def _window_scale(lo, hi):
    """Grey levels per intensity unit; 0 for a degenerate window so that everything maps to 0."""
    return np.float32(255.0 / (hi - lo) if hi > lo else 0.0)


@njit(cache=True, inline="always")
def _to_grey(value, lo, scale):
    g = (value - lo) * scale
    g = min(max(g, np.float32(0.0)), np.float32(255.0))
    return np.uint8(g + np.float32(0.5))


# Bilinear sampling, clamped to the edge pixels, in float32 with flat unsigned indices. Axis-aligned
# sampling (the converter's crops and whole-series volumes) separates: each output column's
# (x0, x1, fx) is computed once per call (_axis_table), each output row's (y0, y1, fy) once per row
# (_row_pair); _bilinear is the same arithmetic for one arbitrary point.

@njit(cache=True)
def _axis_table(first, step, n_out, size):
    """(x0, x1, fx) for output positions ``first + j * step`` (j < n_out) along an axis of ``size``."""
    x0s = np.empty(n_out, np.uint64)
    x1s = np.empty(n_out, np.uint64)
    fxs = np.empty(n_out, np.float32)
    for j in range(n_out):
        x = min(max(np.float32(first + j * step), np.float32(0.0)), np.float32(size - 1))
        x0s[j] = np.uint64(x)
        x1s[j] = min(x0s[j] + np.uint64(1), np.uint64(size - 1))
        fxs[j] = x - np.float32(x0s[j])
    return x0s, x1s, fxs


@njit(cache=True, inline="always")
def _row_pair(base, y, h, w):
    """Flat offsets of the two image rows around row ``y`` of the plane at ``base``, and the weight."""
    y = min(max(np.float32(y), np.float32(0.0)), np.float32(h - 1))
    y0 = np.uint64(y)
    r0 = base + y0 * np.uint64(w)
    r1 = base + min(y0 + np.uint64(1), np.uint64(h - 1)) * np.uint64(w)
    return r0, r1, y - np.float32(y0)


@njit(cache=True, inline="always")
def _lerp_rows(voxels, r0, r1, x0, x1, fx, fy):
    top = voxels[r0 + x0] + (voxels[r0 + x1] - voxels[r0 + x0]) * fx
    bottom = voxels[r1 + x0] + (voxels[r1 + x1] - voxels[r1 + x0]) * fx
    return top + (bottom - top) * fy


@njit(cache=True, inline="always")
def _bilinear(voxels, base, h, w, x, y):
    """Bilinear sample at (col x, row y) of the [h, w] image starting at flat offset ``base`` of
    ``voxels`` (a flattened C-order stack); outside points take the edge pixel. Flat unsigned
    indices and float32 arithmetic keep the inner loops free of wraparound checks."""
    x = min(max(np.float32(x), np.float32(0.0)), np.float32(w - 1))
    x0 = np.uint64(x)  # floor: x >= 0 here
    x1 = min(x0 + np.uint64(1), np.uint64(w - 1))
    r0, r1, fy = _row_pair(base, y, h, w)
    return _lerp_rows(voxels, r0, r1, x0, x1, x - np.float32(x0), fy)


# ---------------------------------------------------------------------------------------------------
# Public kernels.

@njit(parallel=True, cache=True, fastmath=True)
def normalize_uint8(stack, lo, hi):
    """uint8 [S, H, W]: ``round((v - lo) / (hi - lo) * 255)`` clipped to [0, 255]; zeros if hi <= lo."""
    flat = stack.reshape(-1)  # a view (ravel may copy)
    out = np.empty(flat.size, np.uint8)
    scale = _window_scale(lo, hi)
    lo32 = np.float32(lo)
    for i in prange(flat.size):
        out[i] = _to_grey(flat[i], lo32, scale)
    return out.reshape(stack.shape)


@njit(parallel=True, cache=True, fastmath=True)
def crop_stack(stack, slice_idx, center_col, center_row, spacing_row_mm, spacing_col_mm, box_mm,
               out_px, angle_rad, lo, hi):
    """uint8 [len(slice_idx), out_px, out_px]: oriented square crops of ``box_mm`` mm, windowed.

    ``slice_idx`` (int array) is clamped to [0, S-1], so slices beyond either end of the series repeat
    the edge slice. The box is centred on pixel (center_col, center_row) (sub-pixel floats) and
    sampled on an out_px x out_px grid whose pixel (row i, col j) centre lies at box coordinates
        u = (j + 0.5 - out_px/2) * box_mm/out_px   (mm along the rotated column axis)
        v = (i + 0.5 - out_px/2) * box_mm/out_px   (mm along the rotated row axis).
    The rotated column axis is (cos a, sin a) and the row axis (-sin a, cos a) in physical
    (column mm, row mm) space, so with a = angle_rad the image point sampled is
        col = center_col + (u cos a - v sin a) / spacing_col_mm
        row = center_row + (u sin a + v cos a) / spacing_row_mm.
    Rotating in millimetres keeps the box square on anisotropic pixels. a = +90 degrees puts the
    image's +row direction along the output's +col direction.
    """
    n_slices, h, w = stack.shape
    voxels = stack.reshape(-1)
    n = slice_idx.size
    out = np.empty((n, out_px, out_px), np.uint8)
    scale = _window_scale(lo, hi)
    lo32 = np.float32(lo)
    step = box_mm / out_px
    half = out_px / 2.0 - 0.5
    cos_a = math.cos(angle_rad)
    sin_a = math.sin(angle_rad)
    # Image-pixel displacement per output column (du) and per output row (dv).
    dcol_du = step * cos_a / spacing_col_mm
    drow_du = step * sin_a / spacing_row_mm
    dcol_dv = -step * sin_a / spacing_col_mm
    drow_dv = step * cos_a / spacing_row_mm
    for t in prange(n * out_px):  # one task per output row: balanced even for few slices
        k = t // out_px
        i = t - k * out_px
        base = np.uint64(min(max(slice_idx[k], 0), n_slices - 1) * h * w)
        x = center_col - half * dcol_du + (i - half) * dcol_dv  # sample point of output col 0
        y = center_row - half * drow_du + (i - half) * drow_dv
        for j in range(out_px):
            out[k, i, j] = _to_grey(_bilinear(voxels, base, h, w, x, y), lo32, scale)
            x += dcol_du
            y += drow_du
    return out


@njit(parallel=True, cache=True, fastmath=True)
def crop_boxes(stack, slice_idx, centers, spacing_row_mm, spacing_col_mm, box_mm, out_px, lo, hi):
    """uint8 [B, D, out_px, out_px]: ``crop_stack`` at angle 0 for B boxes of one series in one call
    (the converter's case): box b takes slices ``slice_idx[b]`` (int [B, D], clamped to the series)
    around centre ``centers[b] = (col, row)``. One call per series, not per box: a parallel launch
    costs about as much as cutting one 11-slice crop, and the B * D * out_px rows share the threads.
    Axis-aligned sampling separates: each output column's (x0, x1, fx) is computed once per box."""
    n_slices, h, w = stack.shape
    voxels = stack.reshape(-1)
    n_boxes, depth = slice_idx.shape
    out = np.empty((n_boxes, depth, out_px, out_px), np.uint8)
    scale = _window_scale(lo, hi)
    lo32 = np.float32(lo)
    step = box_mm / out_px
    half = out_px / 2.0 - 0.5
    dcol = step / spacing_col_mm
    drow = step / spacing_row_mm
    x0s = np.empty((n_boxes, out_px), np.uint64)
    x1s = np.empty((n_boxes, out_px), np.uint64)
    fxs = np.empty((n_boxes, out_px), np.float32)
    for b in range(n_boxes):
        x0s[b], x1s[b], fxs[b] = _axis_table(centers[b, 0] - half * dcol, dcol, out_px, w)
    for t in prange(n_boxes * depth * out_px):
        i = t % out_px
        k = (t // out_px) % depth
        b = t // (out_px * depth)
        base = np.uint64(min(max(slice_idx[b, k], 0), n_slices - 1) * h * w)
        r0, r1, fy = _row_pair(base, centers[b, 1] - half * drow + i * drow, h, w)
        for j in range(out_px):
            out[b, k, i, j] = _to_grey(_lerp_rows(voxels, r0, r1, x0s[b, j], x1s[b, j], fxs[b, j], fy), lo32, scale)
    return out


@njit(parallel=True, cache=True, fastmath=True)
def resample_volume(stack, out_slices, out_px, lo, hi):
    """uint8 [out_slices, out_px, out_px]: the whole series resized, windowed (level localiser input).

    Slice axis: linear interpolation at ``out_slices`` evenly spaced positions from the first to the
    last slice (both included; one output slice samples the middle). In-plane: the whole H x W field
    is resized to out_px x out_px with bilinear sampling at pixel centres (output centre j maps to
    input col (j + 0.5) * W/out_px - 0.5, as cv2.resize / torch align_corners=False), without
    anti-aliasing and without keeping the aspect ratio: the caller keeps the original pixel
    spacing to map localiser outputs back.
    """
    n_slices, h, w = stack.shape
    voxels = stack.reshape(-1)
    out = np.empty((out_slices, out_px, out_px), np.uint8)
    scale = _window_scale(lo, hi)
    lo32 = np.float32(lo)
    sx = w / out_px
    sy = h / out_px
    z_step = (n_slices - 1) / (out_slices - 1) if out_slices > 1 else 0.0
    z_first = 0.0 if out_slices > 1 else (n_slices - 1) / 2.0
    x0s, x1s, fxs = _axis_table(0.5 * sx - 0.5, sx, out_px, w)
    for t in prange(out_slices * out_px):
        k = t // out_px
        i = t - k * out_px
        z = z_first + k * z_step
        z0 = min(int(z), n_slices - 1)
        z1 = min(z0 + 1, n_slices - 1)
        fz = np.float32(z - z0)
        y = (i + 0.5) * sy - 0.5
        a0, a1, fy = _row_pair(np.uint64(z0 * h * w), y, h, w)
        b0, b1, _ = _row_pair(np.uint64(z1 * h * w), y, h, w)
        for j in range(out_px):  # branch-free: at fz == 0 the lerp returns the first plane exactly
            a = _lerp_rows(voxels, a0, a1, x0s[j], x1s[j], fxs[j], fy)
            b = _lerp_rows(voxels, b0, b1, x0s[j], x1s[j], fxs[j], fy)
            out[k, i, j] = _to_grey(a + (b - a) * fz, lo32, scale)
    return out
