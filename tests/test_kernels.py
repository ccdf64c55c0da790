"""Numba kernels against their NumPy references (lsdc.preprocess.kernels_ref), plus the things a
reference cannot show: planted markers, edge slices, JIT switched off, forked and spawned workers."""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lsdc.preprocess import kernels as K
from lsdc.preprocess import kernels_ref as R
from lsdc.preprocess.kernel_bench import kernel_speed, mr_like_series


def _series(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 1000 - 100).astype(np.float32)


def _max_grey_diff(a, b):
    assert a.dtype == np.uint8 and a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# ----------------------------------------------------------------------------------------------- window

def _window_cases():
    rng = np.random.default_rng(1)
    ties = np.round(rng.gamma(2.0, 100.0, (6, 40, 50))).astype(np.float32)
    ties[:, :10] = 0.0  # a zero background: the low percentile lands on a tie
    return {
        "uniform": _series((5, 64, 48)),
        "mr_like": mr_like_series(slices=4, size=128),
        "ties": ties,
        "negative": -np.abs(_series((3, 33, 17), seed=2)),
        "tiny": _series((2, 3, 4), seed=3),
        "constant": np.full((2, 8, 8), 7.5, np.float32),
        "big": mr_like_series(slices=3, size=320, seed=4),  # more voxels than the sample
    }


@pytest.mark.parametrize("name", list(_window_cases()))
@pytest.mark.parametrize("pcts", [(0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (50.0, 50.0), (99.9, 0.1)])
def test_series_window_matches_percentile(name, pcts):
    stack = _window_cases()[name]
    got = K.series_window(stack, *pcts)
    want = R.series_window_ref(stack, *pcts)
    span = float(stack.max() - stack.min()) or 1.0
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * span)


def test_series_window_exact_fallback_when_bracket_misses(monkeypatch):
    stack = mr_like_series(slices=2, size=128, seed=5)
    top = np.float32(stack.max())
    monkeypatch.setattr(K, "_bracket", lambda sample, q: (top, top))  # a bracket that holds no rank
    np.testing.assert_allclose(K.series_window(stack, 0.5, 99.5), R.series_window_ref(stack, 0.5, 99.5))


def test_window_voxels_lattice_covers_the_series_and_keeps_the_window():
    """A series of 20 x 320 x 320 sampled down to 2**18 voxels: every slice, row and column is
    visited, and the window moves by well under one grey level of the full-series window."""
    stack = mr_like_series(slices=20, size=320, seed=6)
    assert K.window_voxels(stack, 0).size == stack.size
    assert K.window_voxels(stack, stack.size).size == stack.size
    sample = K.window_voxels(stack, 1 << 18)
    assert (1 << 17) < sample.size <= (1 << 18)
    flat = stack.reshape(-1)
    strides = [k for k in range(2, 64) if flat[::k].size == sample.size and np.array_equal(flat[::k], sample)]
    assert len(strides) == 1 and math.gcd(strides[0], 320) == 1, strides
    s_idx, r_idx, c_idx = np.unravel_index(np.arange(0, stack.size, strides[0]), stack.shape)
    assert len(set(s_idx)) == 20 and len(set(r_idx)) == 320 and len(set(c_idx)) == 320
    lo, hi = R.series_window_ref(stack, 0.5, 99.5)
    lo_s, hi_s = K.series_window(sample, 0.5, 99.5)
    grey = 255.0 / (hi - lo)
    assert abs(lo_s - lo) * grey < 0.5 and abs(hi_s - hi) * grey < 0.5
    full = K.normalize_uint8(stack, lo, hi)
    assert _max_grey_diff(K.normalize_uint8(stack, lo_s, hi_s), full) <= 1


def test_series_window_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        K.series_window(np.zeros((0, 4, 4), np.float32), 1, 99)
    with pytest.raises(ValueError, match="percentiles"):
        K.series_window(np.zeros((1, 4, 4), np.float32), -1, 99)


# -------------------------------------------------------------------------------------------- normalize

@pytest.mark.parametrize("shape", [(1, 5, 7), (4, 64, 48), (3, 129, 257)])
def test_normalize_matches_reference(shape):
    stack = _series(shape)
    lo, hi = R.series_window_ref(stack, 1, 99)
    got = K.normalize_uint8(stack, lo, hi)
    assert got.shape == shape
    assert _max_grey_diff(got, R.normalize_uint8_ref(stack, lo, hi)) <= 1
    assert got.min() == 0 and got.max() == 255  # values beyond the window are clipped


def test_normalize_degenerate_window_is_zero():
    stack = _series((2, 6, 6))
    assert not K.normalize_uint8(stack, 5.0, 5.0).any()
    assert not K.normalize_uint8(stack, 9.0, 1.0).any()


# ------------------------------------------------------------------------------------------------- crop

CROP_CASES = [
    # shape, slice_idx, centre (col, row), spacing (row, col) mm, box_mm, out_px, angle
    ((7, 64, 80), [2, 3, 4], (40.2, 30.7), (0.7, 0.7), 30.0, 32, 0.0),
    ((5, 50, 90), [0, 1, 2, 3, 4], (10.5, 45.0), (0.5, 0.9), 25.0, 40, 0.3),  # anisotropic, near edges
    ((4, 70, 60), [-3, -1, 0, 3, 5, 9], (58.9, 1.2), (1.1, 0.6), 48.0, 24, -1.1),  # slices beyond ends
    ((3, 40, 40), [1], (-15.0, 60.0), (0.8, 0.8), 20.0, 17, 2.5),  # centre outside the image
    ((6, 33, 47), [0, 5], (23.3, 16.1), (0.45, 0.45), 10.0, 64, math.pi / 2),  # upsampling
]


@pytest.mark.parametrize("case", CROP_CASES)
def test_crop_matches_reference(case):
    shape, idx, (cc, cr), (sr, sc), box_mm, out_px, angle = case
    stack = _series(shape, seed=len(idx))
    lo, hi = R.series_window_ref(stack, 0.5, 99.5)
    idx = np.array(idx, np.int64)
    args = (stack, idx, cc, cr, sr, sc, box_mm, out_px, angle, lo, hi)
    got = K.crop_stack(*args)
    assert got.shape == (len(idx), out_px, out_px) and got.dtype == np.uint8
    assert _max_grey_diff(got, R.crop_stack_ref(*args)) <= 1


@pytest.mark.parametrize("case", CROP_CASES)
def test_crop_boxes_matches_reference(case):
    """Every case's geometry at angle 0, as three boxes of one series cut in one call (centres
    shifted, the last one outside the image) against the reference crop of each box."""
    shape, idx, (cc, cr), (sr, sc), box_mm, out_px, _ = case
    stack = _series(shape, seed=len(idx) + 10)
    lo, hi = R.series_window_ref(stack, 0.5, 99.5)
    slice_idx = np.array([idx, idx[::-1], [i + 1 for i in idx]], np.int64)
    centers = np.array([(cc, cr), (cc - 3.7, cr + 2.2), (shape[2] + 5.0, -4.0)])
    args = (stack, slice_idx, centers, sr, sc, box_mm, out_px, lo, hi)
    got = K.crop_boxes(*args)
    assert got.shape == (3, len(idx), out_px, out_px) and got.dtype == np.uint8
    assert _max_grey_diff(got, R.crop_boxes_ref(*args)) <= 1
    single = K.crop_stack(stack, slice_idx[1], centers[1, 0], centers[1, 1], sr, sc, box_mm, out_px, 0.0, lo, hi)
    assert _max_grey_diff(got[1], single) <= 1


def test_crop_beyond_ends_repeats_edge_slice():
    stack = _series((4, 30, 30))
    args = (12.0, 14.0, 0.8, 0.8, 15.0, 16, 0.4, 0.0, 1000.0)
    got = K.crop_stack(stack, np.array([-2, -1, 0, 3, 4, 7]), *args)
    first = K.crop_stack(stack, np.array([0]), *args)[0]
    last = K.crop_stack(stack, np.array([3]), *args)[0]
    for k in (0, 1, 2):
        np.testing.assert_array_equal(got[k], first)
    for k in (3, 4, 5):
        np.testing.assert_array_equal(got[k], last)


def _marker_stack(col, row, shape=(3, 100, 120)):
    stack = np.zeros(shape, np.float32)
    stack[:, row, col] = 1000.0
    return stack


def test_crop_centres_a_planted_marker():
    stack = _marker_stack(col=70, row=35)
    out_px = 41  # odd: one pixel sits exactly on the box centre
    for spacing in [(0.5, 0.5), (0.6, 0.9)]:
        crop = K.crop_stack(stack, np.array([1]), 70.0, 35.0, *spacing, 20.0, out_px, 0.0, 0.0, 1000.0)[0]
        assert np.unravel_index(crop.argmax(), crop.shape) == (20, 20)
        assert crop[20, 20] == 255


def test_crop_rotation_by_90_degrees_moves_marker():
    # Marker 10 px below the centre (+row). Box 41 mm over 41 px at 1 mm/px: 1 output px per mm.
    # At a = +90 deg the output's +col axis runs along the image's +row axis, so the marker appears
    # 10 px right of the output centre; at a = 0 it is 10 px below.
    stack = _marker_stack(col=60, row=60)
    common = (np.array([0]), 60.0, 50.0, 1.0, 1.0, 41.0, 41)
    upright = K.crop_stack(stack, *common, 0.0, 0.0, 1000.0)[0]
    rotated = K.crop_stack(stack, *common, math.pi / 2, 0.0, 1000.0)[0]
    assert np.unravel_index(upright.argmax(), upright.shape) == (30, 20)
    assert np.unravel_index(rotated.argmax(), rotated.shape) == (20, 30)


def test_crop_box_is_millimetres_on_anisotropic_pixels():
    # Markers 10 mm right and 10 mm down of the centre; pixels 0.5 mm (rows) x 1.0 mm (cols).
    stack = np.zeros((1, 200, 200), np.float32)
    stack[0, 100, 110] = 1000.0  # 10 cols * 1.0 mm
    stack[0, 120, 100] = 1000.0  # 20 rows * 0.5 mm
    crop = K.crop_stack(stack, np.array([0]), 100.0, 100.0, 0.5, 1.0, 41.0, 41, 0.0, 0.0, 1000.0)[0]
    peaks = {tuple(int(v) for v in p) for p in np.argwhere(crop == 255)}
    assert peaks == {(20, 30), (30, 20)}


# --------------------------------------------------------------------------------------------- resample

@pytest.mark.parametrize("shape,out_slices,out_px", [
    ((20, 64, 64), 16, 32), ((5, 40, 70), 9, 48), ((3, 31, 17), 1, 20), ((1, 16, 16), 4, 8), ((8, 50, 50), 8, 50),
])
def test_resample_matches_reference(shape, out_slices, out_px):
    stack = _series(shape)
    lo, hi = R.series_window_ref(stack, 0.5, 99.5)
    got = K.resample_volume(stack, out_slices, out_px, lo, hi)
    assert got.shape == (out_slices, out_px, out_px) and got.dtype == np.uint8
    assert _max_grey_diff(got, R.resample_volume_ref(stack, out_slices, out_px, lo, hi)) <= 1


def test_resample_same_size_is_normalize():
    stack = _series((6, 24, 24))
    same = K.resample_volume(stack, 6, 24, 0.0, 500.0)
    assert _max_grey_diff(same, K.normalize_uint8(stack, 0.0, 500.0)) <= 1


# ------------------------------------------------------------------------------------ processes and JIT

def test_kernels_run_with_jit_disabled():
    script = textwrap.dedent("""
        import numpy as np
        from lsdc.preprocess import kernels as K, kernels_ref as R
        assert not hasattr(K.crop_stack, "signatures"), "JIT is still on"
        rng = np.random.default_rng(0)
        s = (rng.random((3, 12, 10)) * 100).astype(np.float32)
        lo, hi = K.series_window(s, 1, 99)
        assert np.allclose((lo, hi), R.series_window_ref(s, 1, 99))
        def close(a, b):
            assert np.abs(a.astype(int) - b).max() <= 1
        close(K.normalize_uint8(s, lo, hi), R.normalize_uint8_ref(s, lo, hi))
        args = (s, np.array([-1, 1, 4]), 4.5, 6.2, 0.7, 0.9, 8.0, 9, 0.4, lo, hi)
        close(K.crop_stack(*args), R.crop_stack_ref(*args))
        args = (s, np.array([[-1, 1, 4], [0, 2, 2]]), np.array([[4.5, 6.2], [1.0, 11.0]]), 0.7, 0.9, 8.0, 9, lo, hi)
        close(K.crop_boxes(*args), R.crop_boxes_ref(*args))
        close(K.resample_volume(s, 4, 6, lo, hi), R.resample_volume_ref(s, 4, 6, lo, hi))
        print("ok")
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_threading_layer_is_fork_safe_in_a_fresh_process():
    script = ("import numpy as np, numba\nfrom lsdc.preprocess import kernels as K\n"
              "K.normalize_uint8(np.ones((1, 4, 4), np.float32), 0.0, 2.0)\nprint(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "workqueue"


_POOL_STACK = _series((6, 48, 40), seed=9)


def _work(seed):
    """Runs in a pool worker: every kernel, results returned for comparison with the parent."""
    lo, hi = K.series_window(_POOL_STACK, 1, 99)
    crop = K.crop_stack(_POOL_STACK, np.array([seed - 1, seed, seed + 1]), 20.0 + seed, 18.0, 0.7, 0.8,
                        20.0, 24, 0.1 * seed, lo, hi)
    return lo, hi, crop, K.normalize_uint8(_POOL_STACK, lo, hi), K.resample_volume(_POOL_STACK, 3, 16, lo, hi)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_kernels_in_worker_processes_after_parent_ran_parallel_kernel(method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} not available here")
    expected = [_work(seed) for seed in range(4)]  # parallel kernels run in the parent first
    with mp.get_context(method).Pool(2) as pool:
        # A worker killed by the threading runtime would hang a Pool: the timeout turns that into a failure.
        got = pool.map_async(_work, range(4)).get(timeout=120)
    for want, have in zip(expected, got):
        assert want[:2] == have[:2]
        for a, b in zip(want[2:], have[2:]):
            np.testing.assert_array_equal(a, b)


def test_kernel_speed_reports_every_kernel():
    result = kernel_speed(repeats=1, vol=mr_like_series(slices=12, size=160))
    assert set(result) == {"series_window", "normalize_uint8", "crop_stack", "crop_boxes", "resample_volume"}
    for r in result.values():
        assert r["numba_s"] > 0 and r["numpy_s"] > 0 and r["speedup"] == pytest.approx(r["numpy_s"] / r["numba_s"])
