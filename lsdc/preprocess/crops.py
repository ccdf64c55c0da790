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
from ..store.layout import INDEX_COLUMNS, STORE_VERSION, VOLUME_INDEX_COLUMNS, VOLUME_VIEWS
from ..store.reasons import Reason
from .kernels import crop_boxes, resample_volume, series_window, window_voxels
from .plan import StudyJob, Target
from .records import skip
from .series import Series, SeriesError, load_series
from .stacks import Stack


@dataclass
class StudyResult:
    study_id: int
    fingerprint: str
    crops: dict = field(default_factory=dict)  # view -> uint8 [n, S, H, W]
    rows: dict = field(default_factory=dict)  # view -> list of index rows
    volumes: dict = field(default_factory=dict)  # view -> uint8 [m, vs, vpx, vpx]
    volume_rows: dict = field(default_factory=dict)
    skips: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # what was dropped or collapsed without losing a sample
    series: list = field(default_factory=list)  # per series read: stacks, collapsed, dropped
    slices_read: int = 0


def study_fingerprint(job: StudyJob, pcfg: PreprocessConfig) -> str:
    """Changes when the study's files, its targets or the crop spec change (then it is redone)."""
    h = hashlib.sha256(f"store v{STORE_VERSION}".encode() + json.dumps(asdict(pcfg), sort_keys=True).encode())
    h.update(json.dumps([asdict(t) for t in job.targets], sort_keys=True).encode())
    h.update(json.dumps(sorted(job.series_views.items())).encode())
    for series_id in sorted(job.series_views):
        d = job.study_dir / str(series_id)
        if d.is_dir():
            for e in sorted(os.scandir(d), key=lambda e: e.name):
                st = e.stat()
                h.update(f"{series_id}/{e.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:32]


def _sample_row(job: StudyJob, t: Target, s: Series, st: Stack, idx: int, box_mm: float, box_px: int) -> dict:
    point = st.pixel_to_patient(idx, t.x, t.y)
    half_col = box_mm / 2 / st.spacing_rc[1]
    half_row = box_mm / 2 / st.spacing_rc[0]
    return _checked(INDEX_COLUMNS, {
        "study_id": job.study_id, "series_id": t.series_id, "condition": t.condition, "level": t.level,
        "side": t.side, "label": t.label, "level_idx": LEVELS.index(t.level), "side_idx": SIDES.index(t.side),
        "instance_number": t.instance_number, "slice_index": idx, "n_slices": s.n_slices,
        "stack": st.index, "stack_slices": st.n_slices,
        "x_px": t.x, "y_px": t.y, "x_mm": point[0], "y_mm": point[1], "z_mm": point[2],
        "spacing_row_mm": float(st.spacing_rc[0]), "spacing_col_mm": float(st.spacing_rc[1]),
        "box_mm": box_mm, "box_px": box_px,
        "box_col0": t.x - half_col, "box_row0": t.y - half_row, "box_col1": t.x + half_col, "box_row1": t.y + half_row,
    })


def _checked(columns, row: dict) -> dict:
    assert tuple(row) == columns, f"row keys {tuple(row)} differ from the store contract {columns}"
    return row


def _volume_row(job: StudyJob, series_id: int, view: str, st: Stack) -> dict:
    return _checked(VOLUME_INDEX_COLUMNS, {
        "study_id": job.study_id, "series_id": series_id, "view": view, "stack": st.index,
        "n_slices": st.n_slices, "rows": st.rows, "cols": st.cols,
        "spacing_row_mm": float(st.spacing_rc[0]), "spacing_col_mm": float(st.spacing_rc[1]),
        "iop": json.dumps([float(v) for v in st.iop]),
        "positions": json.dumps(np.asarray(st.positions, dtype=float).round(4).tolist()),
        "instance_numbers": json.dumps([int(v) for v in st.instance_numbers]),
    })


def _window(s: Series, pcfg: PreprocessConfig) -> tuple[float, float]:
    """One grey window for the whole series (every stack mapped alike), from a lattice of each
    stack's voxels in proportion to its size (a one-stack series: exactly its own lattice)."""
    if len(s.stacks) == 1:
        voxels = window_voxels(s.stacks[0].volume, pcfg.norm_max_voxels)
    else:
        total = sum(st.volume.size for st in s.stacks)
        share = lambda st: 0 if pcfg.norm_max_voxels <= 0 else max(1, pcfg.norm_max_voxels * st.volume.size // total)
        voxels = np.concatenate([window_voxels(st.volume, share(st)) for st in s.stacks])
    return series_window(voxels, pcfg.norm_low_pct, pcfg.norm_high_pct)


def volume_stack(s: Series) -> Stack | None:
    """The stack a sagittal series' localiser volume is made from: the one with the most slices (the
    first in spatial order on a tie), or None when no stack has two slices."""
    best = max(s.stacks, key=lambda st: st.n_slices)
    return best if best.usable else None


def warm_up_kernels(pcfg: PreprocessConfig) -> None:
    """Compile (or load from cache) every kernel with the argument types convert_study uses, so
    forked workers inherit them instead of each loading them again."""
    stack = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    lo, hi = series_window(stack, pcfg.norm_low_pct, pcfg.norm_high_pct)
    crop_boxes(stack, np.arange(-1, 2, dtype=np.int64)[None], np.array([[10.0, 12.0]]), 0.7, 0.7, 20.0, 16, lo, hi)
    resample_volume(stack, pcfg.volume_slices, pcfg.volume_px, lo, hi)


def _note_series(res: StudyResult, study_id: int, view: str, s: Series) -> None:
    """What reading the series changed without skipping anything: notes, and its stack count."""
    res.slices_read += s.n_slices + len(s.collapsed) + len(s.dropped)  # every file read
    res.series.append({"study_id": study_id, "series_id": s.series_id, "view": view, "stacks": len(s.stacks),
                       "collapsed": len(s.collapsed), "dropped": len(s.dropped)})
    for d in s.dropped:
        res.notes.append(skip(d.reason, study_id, s.series_id, view, detail=f"slice dropped: {d.detail}"))
    for lose, keep in s.collapsed.items():
        res.notes.append(skip(Reason.DUPLICATE_COLLAPSED, study_id, s.series_id, view,
                              detail=f"instances {lose} and {keep} share one position; kept {keep}"))


def convert_study(job: StudyJob, pcfg: PreprocessConfig, fingerprint: str | None = None) -> StudyResult:
    """``fingerprint``: the study's, when the caller already computed it (it stats every file)."""
    res = StudyResult(job.study_id, fingerprint or study_fingerprint(job, pcfg))
    by_series: dict[int, list[Target]] = {}
    for t in job.targets:
        by_series.setdefault(t.series_id, []).append(t)
    wanted = set(by_series) | {sid for sid, v in job.series_views.items() if v in VOLUME_VIEWS}
    if not job.study_dir.is_dir():
        for t in job.targets:
            res.skips.append(skip(Reason.STUDY_FOLDER_MISSING, job.study_id, t.series_id, t.view, t.condition, t.level,
                                  str(job.study_dir)))
        if not job.targets:
            res.skips.append(skip(Reason.STUDY_FOLDER_MISSING, job.study_id, detail=str(job.study_dir)))
        return res

    for series_id in sorted(wanted):
        view = job.series_views[series_id]
        targets = by_series.get(series_id, [])
        try:
            s = load_series(job.study_dir / str(series_id), job.study_id, series_id,
                            keep_instances=[t.instance_number for t in targets])
        except SeriesError as e:
            for t in targets:
                res.skips.append(skip(e.reason, job.study_id, series_id, view, t.condition, t.level, str(e)))
            if not targets:
                res.skips.append(skip(e.reason, job.study_id, series_id, view, detail=str(e)))
            continue
        _note_series(res, job.study_id, view, s)
        lo, hi = _window(s, pcfg)
        spec = pcfg.spec(view)
        half = spec.store_slices // 2
        kept: dict[int, list] = {}  # stack index -> [(target, index of its slice in the stack)]
        for t in targets:
            where = dict(study_id=job.study_id, series_id=series_id, view=view, condition=t.condition, level=t.level)
            try:
                st, idx = s.find(t.instance_number)
            except SeriesError as e:
                res.skips.append(skip(e.reason, **where, detail=str(e)))
                continue
            if not st.usable:
                res.skips.append(skip(Reason.ONE_SLICE, **where, detail=f"instance {t.instance_number} is the only slice "
                                      f"of its stack ({st.rows}x{st.cols}, IOP {st.iop.round(4).tolist()}) in "
                                      f"{job.study_dir / str(series_id)}: no neighbours, no slice spacing"))
                continue
            if not (0 <= t.x <= st.cols - 1 and 0 <= t.y <= st.rows - 1):
                res.skips.append(skip(Reason.POINT_OUTSIDE_IMAGE, **where,
                                      detail=f"x={t.x}, y={t.y} outside {st.cols}x{st.rows} image"))
                continue
            kept.setdefault(st.index, []).append((t, idx))
        for k, pairs in sorted(kept.items()):  # a stack's crops in one kernel call; it repeats its edge slices
            st = s.stacks[k]
            slice_idx = np.array([np.arange(i - half, i + half + 1) for _, i in pairs], dtype=np.int64)
            centers = np.array([(float(t.x), float(t.y)) for t, _ in pairs], dtype=np.float64)
            crops = crop_boxes(st.volume, slice_idx, centers, float(st.spacing_rc[0]), float(st.spacing_rc[1]),
                               float(spec.store_mm), spec.store_px, lo, hi)
            res.crops.setdefault(view, []).append(crops)
            res.rows.setdefault(view, []).extend(_sample_row(job, t, s, st, i, spec.store_mm, spec.store_px)
                                                 for t, i in pairs)
        if view in VOLUME_VIEWS:
            st = volume_stack(s)
            if st is None:
                res.skips.append(skip(Reason.ONE_SLICE, job.study_id, series_id, view, detail=f"{job.study_dir / str(series_id)}: "
                                      "no stack with two slices for the localiser volume"))
            else:
                res.volumes.setdefault(view, []).append(resample_volume(st.volume, pcfg.volume_slices, pcfg.volume_px, lo, hi))
                res.volume_rows.setdefault(view, []).append(_volume_row(job, series_id, view, st))
        del s  # one series in memory at a time
    res.crops = {v: np.concatenate(c) for v, c in res.crops.items()}
    res.volumes = {v: np.stack(c) for v, c in res.volumes.items()}
    return res


