"""A synthetic dataset in the Kaggle layout, severity planted in the anatomy only: :func:`synth`
(the `lsdc synth` verb: lsdc.synth.cli).

Every study is drawn from its own generator ``default_rng([seed, split, index])`` and written by one
worker, so the output (CSV bytes, pixel data, UIDs) depends on the seed only, never on ``workers``.
The test split also gets its answers, ``test_labels.csv`` and ``test_label_coordinates.csv``, and each
split its oracle submission ``<split>_oracle.csv`` (the best any model could do: its score is the noise
ceiling), which no pipeline stage reads. Labels follow ``label_model`` (labels.py: ``realistic`` by
default, ``clean`` for learning-mechanics tests). ``synth_manifest.json`` at the root lists the series quirks planted (see
:func:`manifest_entries`); no pipeline stage reads it either.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.geometry import slice_normal
from ..core.schema import CONDITIONS, DESCRIPTION_OF_VIEW, LEVELS, SEVERITIES
from . import dicom_write, labels, phantom, render, tables
from .series import Variety, coordinate_rows, plan_study

SPLITS = ("train", "test")
MAX_SERIES_PER_STUDY = 4
MANIFEST = "synth_manifest.json"


@dataclass(frozen=True)
class StudyJob:
    seed: int
    split: str
    index: int
    study_id: int
    series_ids: tuple
    out_dir: str
    variety: Variety
    label_model: str = "realistic"


def study_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])


def quirk_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The study's series-quirk draws: a stream of their own, so the anatomy, the base geometry and the
    noise of the main stream do not move when a quirk rate changes."""
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index), 1])


def make_jobs(out_dir, studies: int, seed: int, test_studies: int = 0, variety: Variety = Variety(),
              label_model: str = "realistic") -> list:
    """One job per study with unique, seed-determined study and series IDs (7-10 digits)."""
    rng = np.random.default_rng([int(seed), 7919])
    total = studies + test_studies
    used: set[int] = set()

    def draw(n):
        out = []
        while len(out) < n:
            digits = int(rng.choice([7, 8, 9, 10], p=[0.1, 0.2, 0.3, 0.4]))
            v = int(rng.integers(10 ** (digits - 1), min(10 ** digits, 4_294_967_295)))
            if v not in used:
                used.add(v)
                out.append(v)
        return out

    study_ids = draw(total)
    series_ids = draw(total * MAX_SERIES_PER_STUDY)
    jobs = []
    for i in range(total):
        split, index = ("train", i) if i < studies else ("test", i - studies)
        sids = tuple(series_ids[i * MAX_SERIES_PER_STUDY:(i + 1) * MAX_SERIES_PER_STUDY])
        jobs.append(StudyJob(int(seed), split, index, study_ids[i], sids, str(out_dir), variety, label_model))
    return jobs


def build_study(job: StudyJob):
    """(anatomy, blank mask, series plans, choices) of a job: everything but the pixels."""
    rng = study_rng(job.seed, job.split, job.index)
    anat = phantom.make_study(rng, label_model=job.label_model)
    blank = labels.sample_blanks(rng, job.label_model)
    plans, choices = plan_study(rng, anat, job.series_ids, job.variety, blank,
                                quirk_rng(job.seed, job.split, job.index))
    return anat, blank, plans, choices, rng


def ground_truth(studies: int, seed: int, test_studies: int = 0, variety: Variety = Variety(),
                 label_model: str = "realistic") -> dict:
    """study_id -> (split, StudyAnatomy, series plans) of the dataset ``synth`` writes with these
    arguments, without rendering: landmarks in patient mm, severities, narrowing, geometry."""
    out = {}
    for job in make_jobs("", studies, seed, test_studies, variety, label_model):
        anat, _, plans, _, _ = build_study(job)
        out[job.study_id] = (job.split, anat, plans)
    return out


def manifest_entries(job: StudyJob, plans: list, choices: dict) -> tuple[list, dict]:
    """(series entries, study entry) of ``synth_manifest.json`` for one study.

    ``expected_stacks``: the geometric stacks a reader grouping slices by (orientation, matrix, pixel
    spacing) and splitting at position gaps > 1.5x the median spacing finds: the angled slabs (or the
    one stack) plus one for the odd-geometry slices. Repeated positions add no stack."""
    series = [{"study_id": job.study_id, "series_id": p.series_id, "split": job.split, "view": p.view,
               "angled_slabs": p.angled_slabs, "odd_slices": int(p.odd.sum()), "odd_kind": p.odd_kind,
               "repeated_positions": int((p.copy_of >= 0).sum()), "repeated_instances": p.repeated_instances,
               "expected_stacks": p.expected_stacks} for p in plans]
    study = {"study_id": job.study_id, "split": job.split, "repeated_view": choices["repeated_view"],
             "missing_view": choices["missing_view"], "two_axial": bool(choices["two_axial"])}
    return series, study


def manifest(studies: int, seed: int, test_studies: int = 0, variety: Variety = Variety()) -> dict:
    """The ``synth_manifest.json`` that ``synth`` writes with these arguments, without rendering."""
    out = {"series": [], "studies": []}
    for job in make_jobs("", studies, seed, test_studies, variety):
        _, _, plans, choices, _ = build_study(job)
        series, study = manifest_entries(job, plans, choices)
        out["series"] += series
        out["studies"].append(study)
    return out


def render_series(volume, anat, plan, rng) -> list:
    """Stored pixels of every slice of a plan, each sampled with its own geometry; a repeated position
    re-uses its original's rendering with fresh noise."""
    slabs, fields, kept, stored = {}, {}, {}, []
    sources = set(int(k) for k in plan.copy_of[plan.copy_of >= 0])
    for k in range(plan.n):
        ipp, iop, spacing_rc, rows, cols = plan.geometry(k)
        src = int(plan.copy_of[k])
        if src >= 0:
            rel = kept[src]
        else:
            axis = int(np.argmax(np.abs(slice_normal(iop))))
            if axis not in slabs:
                slabs[axis] = render.slab(volume, plan.sequence, iop, plan.thickness_mm)
            rel = render.sample_slice(volume, slabs[axis], anat, plan.sequence, ipp, iop, spacing_rc, rows, cols)
            if k in sources:
                kept[k] = rel
        if (rows, cols) not in fields:
            fields[rows, cols] = render.bias_field(plan.bias, rows, cols)
        stored.append(dicom_write.to_stored(plan, render.acquire(rel, plan.scale, plan.noise, fields[rows, cols],
                                                                 rng)))
    return stored


def run_job(job: StudyJob) -> dict:
    """Render and write one study's DICOMs; return its CSV rows and manifest entries."""
    anat, blank, plans, choices, rng = build_study(job)
    volume = render.paint(anat, tuple(sorted({p.sequence for p in plans})))
    study_dir = Path(job.out_dir) / f"{job.split}_images" / str(job.study_id)
    files = 0
    for plan in plans:
        stored = render_series(volume, anat, plan, rng)
        files += len(dicom_write.write_series(plan, stored, study_dir / str(plan.series_id), seed=job.seed,
                                              study_id=job.study_id, description=DESCRIPTION_OF_VIEW[plan.view]))
    labels_row = ["" if blank[i, j] else SEVERITIES[anat.severity[i, j]]
                  for i in range(len(CONDITIONS)) for j in range(len(LEVELS))]
    oracle = labels.oracle_submission(anat.posterior).reshape(-1, 3)  # CONDITIONS x LEVELS order
    return {"study_id": job.study_id, "split": job.split, "labels": labels_row, "oracle": oracle.tolist(),
            "coordinates": coordinate_rows(anat, plans, blank),
            "series": [(p.series_id, DESCRIPTION_OF_VIEW[p.view]) for p in plans],
            "files": files, "choices": choices, "manifest": manifest_entries(job, plans, choices)}


def synth(out_dir, studies: int, seed: int, test_studies: int = 0, workers: int | None = 1,
          variety: Variety = Variety(), label_model: str = "realistic") -> dict:
    """Write the dataset under ``out_dir`` (absent or empty); returns a summary dict. ``label_model``:
    ``realistic`` (real prevalence, reader noise, an oracle submission) or ``clean`` (see labels.py)."""
    if label_model not in labels.LABEL_MODELS:
        raise InputError(f"--labels must be one of {labels.LABEL_MODELS}, got {label_model!r}")
    out_dir = Path(out_dir)
    for name, value, low in (("studies", studies, 1), ("test_studies", test_studies, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"--workers must be an integer >= 1, got {workers!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: output exists and is not an empty directory")
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = make_jobs(out_dir, int(studies), int(seed), int(test_studies), variety, label_model)
    workers = min(int(workers), len(jobs))
    if workers == 1:
        records = [run_job(j) for j in jobs]
    else:
        # fork: no start-up imports and no __main__ guard needed in callers' scripts
        ctx = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            records = list(pool.map(run_job, jobs))
    tables.write_tables(out_dir, records)
    entries = [e for r in records for e in r["manifest"][0]]
    with open(out_dir / MANIFEST, "w") as f:
        json.dump({"series": entries, "studies": [r["manifest"][1] for r in records]}, f, indent=1)
        f.write("\n")
    train = [r for r in records if r["split"] == "train"]
    return {"out_dir": str(out_dir), "seed": int(seed), "label_model": label_model, "train_studies": len(train),
            "test_studies": len(records) - len(train), "series": sum(len(r["series"]) for r in records),
            "files": sum(r["files"] for r in records), "workers": workers,
            "two_axial_studies": sum(r["choices"]["two_axial"] for r in records),
            "missing_series_studies": sum(r["choices"]["missing_view"] is not None for r in records),
            "repeated_view_studies": sum(r["choices"]["repeated_view"] is not None for r in records),
            "angled_series": sum(e["angled_slabs"] > 0 for e in entries),
            "odd_matrix_series": sum(e["odd_slices"] > 0 for e in entries),
            "repeated_position_series": sum(e["repeated_positions"] > 0 for e in entries),
            "split_series": sum(e["expected_stacks"] > 1 for e in entries),
            "label_mix": tables.label_mix(train), "seconds": round(time.perf_counter() - t0, 2)}
