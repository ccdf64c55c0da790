"""Raw DICOM studies -> submission.csv through the same converter as training: :func:`predict`.

The steps (volumes, localise, crops, classify, submit) are listed in the docstring of the `lsdc
predict` verb, lsdc.inference.cli, which is also its ``-h``.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import Config, PreprocessConfig
from ..core.errors import InputError
from ..core.overrides import config_from_dict
from ..core.progress import progress_bar
from ..core.readers import COORD_COLUMNS, read_sample_submission, read_series_descriptions
from ..core.schema import (AX_T2, CONDITION_TITLE, CONDITIONS, LEFT_NFN, LEVEL_TITLE, LEVELS, RIGHT_NFN, SPINAL,
                           SUBMISSION_COLUMNS, VIEW_CONDITIONS, VIEWS)
from ..localizer import project
from ..localizer.data import load_volumes
from ..localizer.localize import load_localizer, localize_items
from ..metric.official import predictions_to_submission
from ..preprocess.plan import SPLITS
from ..store.reader import read_index
from ..train.device import resolve_device
from . import calibrate as cal
from . import classify

COORDS_FILE = "predicted_coordinates.csv"
KEYPOINTS_FILE = "keypoints.csv"


class StudyClock:
    """Seconds attributable to each study: its own localise/classify time plus an equal share of the
    batched conversions."""

    def __init__(self, studies):
        self.own = {int(s): 0.0 for s in studies}
        self.shared = 0.0

    def add(self, study_id: int, seconds: float) -> None:
        self.own[int(study_id)] = self.own.get(int(study_id), 0.0) + seconds

    def per_study(self) -> np.ndarray:
        n = max(len(self.own), 1)
        return np.array([v + self.shared / n for v in self.own.values()])


def _merged_preprocess(runs: list) -> PreprocessConfig:
    """The crop spec each run was trained with (its view's), the rest from the first run."""
    pcfg = runs[0].cfg.preprocess
    specs, norm = {}, set()
    for r in runs:
        spec = r.cfg.preprocess.spec(r.view)
        if r.view in specs and specs[r.view] != spec:
            raise InputError(f"{r.path}: its {r.view} crop spec {spec} differs from another run's {specs[r.view]}; "
                             "runs of one view must share the store they were trained on")
        specs[r.view] = spec
        norm.add((r.cfg.preprocess.norm_low_pct, r.cfg.preprocess.norm_high_pct))
    if len(norm) > 1:
        raise InputError(f"the runs were trained on stores with different intensity windows {sorted(norm)}")
    low, high = norm.pop()
    return dataclasses.replace(pcfg, **specs, norm_low_pct=low, norm_high_pct=high)


def _write_coords(rows: list[dict], path: Path) -> None:
    df = pd.DataFrame(rows, columns=list(COORD_COLUMNS))
    df["condition"] = [CONDITION_TITLE[c] for c in df["condition"]]
    df["level"] = [LEVEL_TITLE[lv] for lv in df["level"]]
    df.to_csv(path, index=False)


def _best_series(points: pd.DataFrame) -> pd.DataFrame:
    """Per (study, view): the series whose keypoints are most confident (a study may have several)."""
    if not len(points):
        return points
    conf = points.groupby(["study_id", "view", "series_id"])["confidence"].mean().reset_index()
    best = conf.sort_values("confidence", ascending=False).drop_duplicates(["study_id", "view"])
    keep = set(zip(best["study_id"], best["series_id"]))
    return points[[(s, r) in keep for s, r in zip(points["study_id"], points["series_id"])]]


def _axial_rows(study_id: int, pts: pd.DataFrame, axial_ids: list, study_dir: Path, offsets: dict) -> tuple[list, list]:
    """Subarticular coordinate rows of one study, and warnings."""
    def by_level(cond):
        sub = pts[pts["condition"] == cond]
        return {r.level: np.array([r.x_mm, r.y_mm, r.z_mm]) for r in sub.itertuples(index=False)}

    canal, left, right = by_level(SPINAL), by_level(LEFT_NFN), by_level(RIGHT_NFN)
    if not axial_ids or (not canal and not (left and right)):
        return [], []
    stacks, bad = project.read_stacks(study_dir, axial_ids)
    notes = [f"study {study_id}: axial series {sid} unreadable ({reason})" for sid, reason in bad]
    targets = project.subarticular_points(canal, offsets, (left, right))
    rows = []
    for side, by_lv in targets.items():
        for lv, point in by_lv.items():
            hit = project.project(point, stacks)
            if hit is None:
                notes.append(f"study {study_id}: {project.SUBARTICULAR[side]} {lv} is covered by no axial stack")
                continue
            rows.append({"study_id": study_id, "series_id": hit.series_id, "instance_number": hit.instance_number,
                         "condition": project.SUBARTICULAR[side], "level": lv, "x": round(hit.x, 2), "y": round(hit.y, 2)})
    return rows, notes


def localise(data_dir: Path, split: str, work: Path, loc_dir, clock: StudyClock, workers, progress: bool,
             device: str = "cpu") -> tuple[Path, list]:
    """Steps 1-2: volumes, keypoints, axial projection -> the predicted coordinates CSV; warnings."""
    from ..preprocess.convert import preprocess
    loc = load_localizer(loc_dir, device)
    t = time.perf_counter()
    empty = work / "no_coordinates.csv"
    pd.DataFrame(columns=list(COORD_COLUMNS)).to_csv(empty, index=False)
    loc_pcfg = config_from_dict({"preprocess": loc.meta["preprocess"]}).preprocess
    preprocess(data_dir, work / "volumes", split, empty, workers, None, Config(preprocess=loc_pcfg), progress=progress)
    clock.shared += time.perf_counter() - t

    geoms, volumes = load_volumes(work / "volumes")
    series = read_series_descriptions(data_dir / f"{split}_series_descriptions.csv", strict=False)
    axial = series[series["view"] == AX_T2].groupby("study_id")["series_id"].apply(list).to_dict()
    by_study: dict = {}
    for i, g in enumerate(geoms):
        by_study.setdefault(g.study_id, []).append(i)
    rows, notes, all_points = [], [], []
    for study_id in progress_bar(sorted(clock.own), desc="localise", unit="study", disable=not progress):
        t = time.perf_counter()
        items = by_study.get(study_id, [])
        pts = localize_items(loc, [geoms[i] for i in items], volumes[items]) if items else pd.DataFrame()
        pts = _best_series(pts)
        for r in pts.itertuples(index=False):
            rows.append({"study_id": study_id, "series_id": r.series_id, "instance_number": r.instance_number,
                         "condition": r.condition, "level": r.level, "x": round(r.x, 2), "y": round(r.y, 2)})
        if len(pts):
            all_points.append(pts)
        ax_rows, ax_notes = _axial_rows(study_id, pts, axial.get(study_id, []), data_dir / f"{split}_images" / str(study_id),
                                        loc.meta["offsets"]) if len(pts) else ([], [])
        rows += ax_rows
        notes += ax_notes
        clock.add(study_id, time.perf_counter() - t)
    path = work / COORDS_FILE
    _write_coords(rows, path)
    if all_points:
        pd.concat(all_points).to_csv(work / KEYPOINTS_FILE, index=False)
    return path, notes


def classify_store(store: Path, runs: list, tta: bool, clock: StudyClock, progress: bool) -> dict:
    """{(study, condition, level): (3,) probabilities} from every run: a cell seen by several samples
    of one run (e.g. two axial series) gets their mean, then the run's calibration (per study: the
    any-severe scale reads a study's five spinal levels), then the mean over runs."""
    from ..store.reader import crop_spec
    cells: dict = {}
    for run in runs:
        index = read_index(store, run.view)
        if not len(index):
            continue
        reader, meta = classify.open_view(store, run.view, index)
        spec = crop_spec(store, run.view)
        groups = index.groupby("study_id").indices
        rows_out = []
        for study_id, rows in progress_bar(groups.items(), desc=f"classify {run.view}", unit="study", disable=not progress):
            t = time.perf_counter()
            p = classify.run_probs(run, reader, meta, np.asarray(rows, np.int64), spec, tta)
            rows_out += [(int(study_id), index.at[r, "condition"], index.at[r, "level"], *probs) for r, probs in zip(rows, p)]
            clock.add(study_id, time.perf_counter() - t)
        t = time.perf_counter()
        frame = classify.calibrate_cells(run, cal.to_cells(pd.DataFrame(rows_out, columns=[*cal.CELL_KEYS, *cal.PROBS])))
        clock.shared += time.perf_counter() - t
        for s, c, lv, *probs in frame.itertuples(index=False):
            cells.setdefault((int(s), c, lv), []).append(np.asarray(probs, np.float64))
    return {k: np.mean(v, axis=0) for k, v in cells.items()}


def submission_from_store(store, runs: list, studies: list, tta: bool, clock: StudyClock | None = None,
                          progress: bool = False, notes: list | None = None) -> tuple[pd.DataFrame, int]:
    """The submission frame (25 rows per study of ``studies``) of loaded runs on a converted store, and
    how many cells took the training prior (one note per such study appended to ``notes``)."""
    clock = clock or StudyClock(studies)
    cells = classify_store(Path(store), runs, tta, clock, progress)
    return _submission(studies, cells, runs, notes if notes is not None else [])


def _studies(data_dir: Path, split: str) -> tuple[list, pd.DataFrame | None]:
    series = read_series_descriptions(data_dir / f"{split}_series_descriptions.csv", strict=False)
    studies = set(int(s) for s in series["study_id"])
    sample = None
    if (data_dir / "sample_submission.csv").is_file() and split == "test":
        sample = read_sample_submission(data_dir / "sample_submission.csv")
        studies |= set(int(s) for s in sample["study_id"])
    return sorted(studies), sample


def predict(data_dir, runs, out_csv, split: str = "test", localizer_dir=None, work_dir=None, coords=None,
            cfg: Config | None = None, workers: int | None = None, progress: bool = True) -> dict:
    """Write the submission for every study of DATA_DIR's split; returns a summary dict (rows, studies,
    warnings, prior_cells, timings, paths)."""
    cfg = cfg or Config()
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    if split not in SPLITS:
        raise InputError(f"--split must be one of {SPLITS}, got {split!r}")
    if not runs:
        raise InputError("--runs needs at least one run directory")
    if coords is None and localizer_dir is None:
        raise InputError("pass --localizer DIR (a trained localiser) or --coords FILE (known coordinates)")
    studies, sample = _studies(data_dir, split)
    device = resolve_device("auto")
    loaded = [classify.load_run(r, calibrate=cfg.predict.calibrate, device=device) for r in runs]
    clock = StudyClock(studies)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lsdc_predict_")
        work_dir = tmp.name
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    localized = coords is None
    try:
        from ..preprocess.convert import preprocess
        if coords is None:
            coords, notes = localise(data_dir, split, work, localizer_dir, clock, workers, progress, device)
        t = time.perf_counter()
        pcfg = _merged_preprocess(loaded)
        rep = preprocess(data_dir, work / "crops", split, coords, workers, None, Config(preprocess=pcfg), progress=progress)
        clock.shared += time.perf_counter() - t
        out, prior_cells = submission_from_store(work / "crops", loaded, studies, cfg.predict.tta, clock, progress, notes)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if sample is not None:
        missing = set(sample["row_id"]) - set(out["row_id"])
        assert not missing, f"rows of sample_submission.csv not written: {sorted(missing)[:5]}"
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(out_csv, index=False)
    for n in notes:
        warnings.warn(n, stacklevel=2)
    per = clock.per_study()
    summary = {"out": str(out_csv), "rows": int(len(out)), "studies": len(studies), "runs": [str(r.path) for r in loaded],
               "views": sorted({r.view for r in loaded}), "localized": localized,
               "calibration": {str(r.path): _calibration_params(r.calibration) for r in loaded}, "prior_cells": prior_cells,
               "skipped_in_conversion": len(rep.get("skipped", [])), "warnings": notes,
               "seconds": round(time.perf_counter() - t0, 2),
               "seconds_per_study_mean": float(per.mean()), "seconds_per_study_median": float(np.median(per))}
    if work_dir is not None and tmp is None:
        (work / "predict_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _calibration_params(c: dict | None) -> dict | None:
    """The fitted parameters of a run's calibration (its prior table left out of the summary)."""
    return None if c is None else {k: c[k] for k in ("temperature", "severe_scale", "prior_weight") if k in c}


def _submission(studies: list, cells: dict, runs: list, notes: list) -> tuple[pd.DataFrame, int]:
    """25 rows per study; cells without a prediction get the training prior (classify.training_prior:
    the best constant of that condition x level under the metric's weights) and a note per study."""
    prior = classify.training_prior(runs).set_index(["condition", "level"])[list(SUBMISSION_COLUMNS)]
    rows, n_prior = [], 0
    for s in studies:
        fallback = []
        for c in CONDITIONS:
            for lv in LEVELS:
                p = cells.get((s, c, lv))
                if p is None:
                    p = prior.loc[(c, lv)].to_numpy(np.float64)
                    fallback.append(f"{c} {lv}")
                rows.append((s, c, lv, *np.asarray(p, float)))
        if fallback:
            n_prior += len(fallback)
            views = sorted({v for v in VIEWS for c in VIEW_CONDITIONS[v] if any(f.startswith(c + " ") for f in fallback)})
            notes.append(f"study {s}: {len(fallback)} of 25 cells from the training prior (no prediction for "
                         f"{', '.join(views)}: missing or unreadable series, or no run for that view)")
    return predictions_to_submission(rows), n_prior
