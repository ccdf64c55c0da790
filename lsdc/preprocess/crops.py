"""Convert one study: read each needed series once, cut every target's crop, and (sagittal) a
small whole-series volume for the level localiser. Pure function of (job, config) -> StudyResult.

The same code serves training (labelled coordinates) and inference (predicted coordinates via
``lsdc preprocess --coords``): there is no second copy of the crop logic anywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.config import PreprocessConfig
from ..core.schema import LEVELS, SIDES
from .kernels import crop_boxes, resample_volume, series_window, window_voxels
from .plan import StudyJob, Target, skip
from .series import Series, SeriesError, load_series
from .store import INDEX_COLUMNS, VOLUME_INDEX_COLUMNS, VOLUME_VIEWS


@dataclass
class StudyResult:
    study_id: int
    fingerprint: str
    crops: dict = field(default_factory=dict)  # view -> uint8 [n, S, H, W]
    rows: dict = field(default_factory=dict)  # view -> list of index rows
    volumes: dict = field(default_factory=dict)  # view -> uint8 [m, vs, vpx, vpx]
    volume_rows: dict = field(default_factory=dict)
    skips: list = field(default_factory=list)
    slices_read: int = 0


def study_fingerprint(job: StudyJob, pcfg: PreprocessConfig) -> str:
    """Changes when the study's files, its targets or the crop spec change (then it is redone)."""
    h = hashlib.sha256(json.dumps(asdict(pcfg), sort_keys=True).encode())
    h.update(json.dumps([asdict(t) for t in job.targets], sort_keys=True).encode())
    h.update(json.dumps(sorted(job.series_views.items())).encode())
    for series_id in sorted(job.series_views):
        d = job.study_dir / str(series_id)
        if d.is_dir():
            for e in sorted(os.scandir(d), key=lambda e: e.name):
                st = e.stat()
                h.update(f"{series_id}/{e.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:32]


def _sample_row(job: StudyJob, t: Target, s: Series, idx: int, box_mm: float, box_px: int) -> dict:
    point = s.pixel_to_patient(idx, t.x, t.y)
    half_col = box_mm / 2 / s.spacing_rc[1]
    half_row = box_mm / 2 / s.spacing_rc[0]
    return _checked(INDEX_COLUMNS, {
        "study_id": job.study_id, "series_id": t.series_id, "condition": t.condition, "level": t.level,
        "side": t.side, "label": t.label, "level_idx": LEVELS.index(t.level), "side_idx": SIDES.index(t.side),
        "instance_number": t.instance_number, "slice_index": idx, "n_slices": len(s.instance_numbers),
        "x_px": t.x, "y_px": t.y, "x_mm": point[0], "y_mm": point[1], "z_mm": point[2],
        "spacing_row_mm": float(s.spacing_rc[0]), "spacing_col_mm": float(s.spacing_rc[1]),
        "box_mm": box_mm, "box_px": box_px,
        "box_col0": t.x - half_col, "box_row0": t.y - half_row, "box_col1": t.x + half_col, "box_row1": t.y + half_row,
    })


def _checked(columns, row: dict) -> dict:
    assert tuple(row) == columns, f"row keys {tuple(row)} differ from the store contract {columns}"
    return row


def _volume_row(job: StudyJob, series_id: int, view: str, s: Series) -> dict:
    return _checked(VOLUME_INDEX_COLUMNS, {
        "study_id": job.study_id, "series_id": series_id, "view": view, "n_slices": len(s.instance_numbers),
        "rows": int(s.volume.shape[1]), "cols": int(s.volume.shape[2]),
        "spacing_row_mm": float(s.spacing_rc[0]), "spacing_col_mm": float(s.spacing_rc[1]),
        "iop": json.dumps([float(v) for v in s.iop]),
        "positions": json.dumps(np.asarray(s.positions, dtype=float).round(4).tolist()),
        "instance_numbers": json.dumps([int(v) for v in s.instance_numbers]),
    })


def warm_up_kernels(pcfg: PreprocessConfig) -> None:
    """Compile (or load from cache) every kernel with the argument types convert_study uses, so
    forked workers inherit them instead of each loading them again."""
    stack = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    lo, hi = series_window(stack, pcfg.norm_low_pct, pcfg.norm_high_pct)
    crop_boxes(stack, np.arange(-1, 2, dtype=np.int64)[None], np.array([[10.0, 12.0]]), 0.7, 0.7, 20.0, 16, lo, hi)
    resample_volume(stack, pcfg.volume_slices, pcfg.volume_px, lo, hi)


def convert_study(job: StudyJob, pcfg: PreprocessConfig, fingerprint: str | None = None) -> StudyResult:
    """``fingerprint``: the study's, when the caller already computed it (it stats every file)."""
    res = StudyResult(job.study_id, fingerprint or study_fingerprint(job, pcfg))
    by_series: dict[int, list[Target]] = {}
    for t in job.targets:
        by_series.setdefault(t.series_id, []).append(t)
    wanted = set(by_series) | {sid for sid, v in job.series_views.items() if v in VOLUME_VIEWS}
    if not job.study_dir.is_dir():
        for t in job.targets:
            res.skips.append(skip("study_folder_missing", job.study_id, t.series_id, t.view, t.condition, t.level,
                                  str(job.study_dir)))
        if not job.targets:
            res.skips.append(skip("study_folder_missing", job.study_id, detail=str(job.study_dir)))
        return res

    for series_id in sorted(wanted):
        view = job.series_views[series_id]
        targets = by_series.get(series_id, [])
        try:
            s = load_series(job.study_dir / str(series_id), job.study_id, series_id)
        except SeriesError as e:
            for t in targets:
                res.skips.append(skip(e.reason, job.study_id, series_id, view, t.condition, t.level, str(e)))
            if not targets:
                res.skips.append(skip(e.reason, job.study_id, series_id, view, detail=str(e)))
            continue
        res.slices_read += len(s.instance_numbers)
        voxels = window_voxels(s.volume, pcfg.norm_max_voxels)
        lo, hi = series_window(voxels, pcfg.norm_low_pct, pcfg.norm_high_pct)
        spec = pcfg.spec(view)
        half = spec.store_slices // 2
        kept = []  # (target, spatial index of its slice)
        for t in targets:
            where = dict(study_id=job.study_id, series_id=series_id, view=view, condition=t.condition, level=t.level)
            try:
                idx = s.spatial_index(t.instance_number)
            except SeriesError as e:
                res.skips.append(skip("instance_not_in_series", **where, detail=str(e)))
                continue
            rows, cols = s.volume.shape[1:]
            if not (0 <= t.x <= cols - 1 and 0 <= t.y <= rows - 1):
                res.skips.append(skip("point_outside_image", **where,
                                      detail=f"x={t.x}, y={t.y} outside {cols}x{rows} image"))
                continue
            kept.append((t, idx))
        if kept:  # every crop of the series in one kernel call; it repeats edge slices past the ends
            slice_idx = np.array([np.arange(i - half, i + half + 1) for _, i in kept], dtype=np.int64)
            centers = np.array([(float(t.x), float(t.y)) for t, _ in kept], dtype=np.float64)
            crops = crop_boxes(s.volume, slice_idx, centers, float(s.spacing_rc[0]), float(s.spacing_rc[1]),
                               float(spec.store_mm), spec.store_px, lo, hi)
            res.crops.setdefault(view, []).append(crops)
            res.rows.setdefault(view, []).extend(_sample_row(job, t, s, i, spec.store_mm, spec.store_px)
                                                 for t, i in kept)
        if view in VOLUME_VIEWS:
            vol = resample_volume(s.volume, pcfg.volume_slices, pcfg.volume_px, lo, hi)
            res.volumes.setdefault(view, []).append(vol)
            res.volume_rows.setdefault(view, []).append(_volume_row(job, series_id, view, s))
        del s  # one series in memory at a time
    res.crops = {v: np.concatenate(c) for v, c in res.crops.items()}
    res.volumes = {v: np.stack(c) for v, c in res.volumes.items()}
    return res


