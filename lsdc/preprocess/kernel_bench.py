"""Time each Numba kernel against its NumPy reference on realistic sizes (warm-up, median of repeats).

Sizes: one series of 20 slices of 512 x 512 float32 (a typical sagittal series); crops of 11 slices
(7 + 2 x 2 margin) of 148 px (128 px + 15% jitter margin); a 16 x 256 x 256 localiser volume.
Run ``python -m lsdc.preprocess.kernel_bench`` for a table.
"""
from __future__ import annotations

import json
import time

import numba
import numpy as np

from . import kernels as K
from . import kernels_ref as R


def mr_like_series(slices=20, size=512, seed=0, smooth=True) -> np.ndarray:
    """float32 [S, size, size] with MR-like statistics: a zero background (about half the voxels, as
    outside a body) around an elliptic body of integer-valued intensities. ``smooth``: anatomy-like
    bright blobs varying slowly in space plus noise, as in real images; otherwise i.i.d. skewed noise
    (no spatial structure at all: the worst case for series_window's block skipping)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    body = (xx / 0.42) ** 2 + (yy / 0.36) ** 2 < 1.0
    if not smooth:
        vol = np.round(rng.gamma(2.0, 150.0, (slices, size, size))).astype(np.float32)
    else:
        vol = np.full((slices, size, size), 150.0, np.float32)
        z = np.arange(slices)
        for _ in range(12):
            cx, cy = rng.uniform(-0.35, 0.35), rng.uniform(-0.3, 0.3)
            radius, amp, zc = rng.uniform(0.03, 0.15), rng.uniform(200, 900), rng.uniform(0, slices)
            plane = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius ** 2))
            across = amp * np.exp(-0.5 * ((z - zc) / max(slices / 3, 1)) ** 2)
            vol += (across[:, None, None] * plane[None]).astype(np.float32)
        vol = np.round(np.maximum(vol + rng.normal(0, 25, vol.shape).astype(np.float32), 0)).astype(np.float32)
    vol[:, ~body] = 0.0
    return vol


def _median_time(fn, repeats) -> float:
    fn()  # warm-up: compilation or cache load, page faults of first allocations
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _cases(vol):
    lo, hi = R.series_window_ref(vol, 0.5, 99.5)
    h, w = vol.shape[1:]
    crop = (np.arange(-2, 9), w * 0.55, h * 0.45, 0.6875, 0.7031, 46.0, 148, 0.2, lo, hi)
    # one series' worth of converter crops: 10 boxes (5 levels x 2 sides) of 11 slices, axis-aligned
    starts = np.arange(10) % 5
    boxes = (starts[:, None] + np.arange(-2, 9)[None], np.stack([w * (0.4 + 0.03 * np.arange(10)),
             h * (0.3 + 0.05 * (np.arange(10) % 5))], axis=1), 0.6875, 0.7031, 46.0, 148, lo, hi)
    return {
        "series_window": ((vol, 0.5, 99.5), K.series_window, R.series_window_ref),
        "normalize_uint8": ((vol, lo, hi), K.normalize_uint8, R.normalize_uint8_ref),
        "crop_stack": ((vol,) + crop, K.crop_stack, R.crop_stack_ref),
        "crop_boxes": ((vol,) + boxes, K.crop_boxes, R.crop_boxes_ref),
        "resample_volume": ((vol, 16, 256, lo, hi), K.resample_volume, R.resample_volume_ref),
    }


def kernel_speed(repeats=5, vol=None) -> dict:
    """{kernel name: {"numba_s", "numpy_s", "speedup"}} with median wall times in seconds."""
    vol = mr_like_series() if vol is None else vol
    out = {}
    for name, (args, fast, ref) in _cases(vol).items():
        numba_s = _median_time(lambda: fast(*args), repeats)
        numpy_s = _median_time(lambda: ref(*args), repeats)
        out[name] = {"numba_s": numba_s, "numpy_s": numpy_s, "speedup": numpy_s / numba_s}
    return out


def main() -> None:
    results = {"smooth": kernel_speed(repeats=15), "iid": kernel_speed(repeats=15, vol=mr_like_series(smooth=False))}
    print(f"numba {numba.__version__}, layer {numba.threading_layer()}, threads {numba.get_num_threads()}")
    print(f"{'phantom':<8} {'kernel':<16} {'numba ms':>9} {'numpy ms':>9} {'speedup':>8}")
    for phantom, result in results.items():
        for name, r in result.items():
            print(f"{phantom:<8} {name:<16} {r['numba_s'] * 1e3:9.2f} {r['numpy_s'] * 1e3:9.2f} {r['speedup']:8.1f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
