"""What to convert: competition CSVs -> one job per study, and every label that cannot become a sample.

A job lists the study's series (by view) and its targets: one per coordinate row, i.e. one sample per
(study, level) on sagittal T2 and per (study, level, side) on sagittal T1 and axial T2. Nothing here
reads DICOM; problems found from the CSVs alone are returned as skip records for the report, and
coordinate rows read differently (a repeated row read once) as notes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError
from ..core.readers import read_coordinates, read_series_descriptions, read_train
from ..core.schema import BLANK, CONDITION_SIDE, CONDITION_VIEW, CONDITIONS, LEVELS, label_column
from ..store.reasons import Reason
from .coordinates import resolve_repeats
from .records import skip

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Target:
    """One sample to cut: a labelled (or predicted) point on one slice of one series."""

    condition: str
    level: str
    series_id: int
    instance_number: int
    x: float
    y: float
    label: int  # 0/1/2, or BLANK (-1) when train.csv has no grade / the split is unlabelled

    @property
    def view(self) -> str:
        return CONDITION_VIEW[self.condition]

    @property
    def side(self) -> str:
        return CONDITION_SIDE[self.condition]


@dataclass
class StudyJob:
    study_id: int
    study_dir: Path
    series_views: dict[int, str] = field(default_factory=dict)  # series_id -> view (known descriptions only)
    targets: list[Target] = field(default_factory=list)


@dataclass
class Plan:
    jobs: list[StudyJob]  # sorted by study_id
    skips: list[dict]  # skip records: what the CSVs already rule out
    notes: list[dict]  # note records: coordinate rows read differently (repeats read once)


def input_files(data_dir, split: str, coords=None) -> dict[str, Path]:
    """The CSV files a conversion reads (their bytes enter the store's fingerprint)."""
    data_dir = Path(data_dir)
    if split not in SPLITS:
        raise InputError(f"--split must be one of {SPLITS}, got {split!r}")
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: data directory not found")
    files = {"series": data_dir / f"{split}_series_descriptions.csv"}
    if coords is not None:
        files["coords"] = Path(coords)
    elif split == "train":
        files["coords"] = data_dir / "train_label_coordinates.csv"
    else:
        raise InputError("the test split has no labelled coordinates: pass --coords FILE "
                         "(predicted points in train_label_coordinates.csv format)")
    if split == "train":
        files["labels"] = data_dir / "train.csv"
    return files


def make_plan(data_dir, split: str = "train", coords=None) -> Plan:
    """Jobs sorted by study_id, skip records for what the CSVs already rule out, and notes."""
    files = input_files(data_dir, split, coords)
    series = read_series_descriptions(files["series"], strict=False)
    rows = read_coordinates(files["coords"], all_rows=True)
    points, skips, notes = resolve_repeats(rows, files["coords"])
    labels = read_train(files["labels"]).set_index("study_id") if "labels" in files else None
    images = Path(data_dir) / f"{split}_images"

    jobs: dict[int, StudyJob] = {}
    for r in series.itertuples(index=False):
        job = jobs.setdefault(r.study_id, StudyJob(r.study_id, images / str(r.study_id)))
        if r.view is None:
            skips.append(skip(Reason.UNKNOWN_SERIES_DESCRIPTION, r.study_id, r.series_id,
                              detail=f"series_description {r.series_description!r}"))
        else:
            job.series_views[r.series_id] = r.view

    for r in points.itertuples(index=False):
        view = CONDITION_VIEW[r.condition]
        where = dict(study_id=r.study_id, series_id=r.series_id, view=view, condition=r.condition, level=r.level)
        if labels is not None and r.study_id not in labels.index:
            skips.append(skip(Reason.STUDY_NOT_IN_LABELS, **where, detail=f"study {r.study_id} has no train.csv row"))
            continue
        job = jobs.get(r.study_id)
        if job is None:
            skips.append(skip(Reason.STUDY_NOT_IN_SERIES_DESCRIPTIONS, **where,
                              detail=f"study {r.study_id} is not in {files['series'].name}"))
            continue
        if r.series_id not in job.series_views:
            known = r.series_id in set(series.series_id[series.study_id == r.study_id])
            reason = Reason.UNKNOWN_SERIES_DESCRIPTION if known else Reason.SERIES_NOT_IN_SERIES_DESCRIPTIONS
            skips.append(skip(reason, **where, detail=f"series {r.series_id} in {files['series'].name}: "
                              + ("description is not one of the three views" if known else "absent")))
            continue
        if job.series_views[r.series_id] != view:
            skips.append(skip(Reason.SERIES_VIEW_MISMATCH, **where,
                              detail=f"{r.condition} needs {view}, series is {job.series_views[r.series_id]}"))
            continue
        label = BLANK if labels is None else int(labels.at[r.study_id, label_column(r.condition, r.level)])
        job.targets.append(Target(r.condition, r.level, r.series_id, r.instance_number, r.x, r.y, label))

    if labels is not None:  # graded cells that no coordinate row points at cannot become samples
        have = {(r.study_id, r.condition, r.level) for r in rows.itertuples(index=False)}  # conflicts: skipped above
        for study_id, row in labels.iterrows():
            for c in CONDITIONS:
                for lv in LEVELS:
                    if row[label_column(c, lv)] != BLANK and (study_id, c, lv) not in have:
                        skips.append(skip(Reason.NO_COORDINATES, study_id, None, CONDITION_VIEW[c], c, lv,
                                          "graded in train.csv but no coordinate row"))
    return Plan([jobs[s] for s in sorted(jobs)], skips, notes)


def shard(jobs: list[StudyJob], index: int, count: int) -> list[StudyJob]:
    """Studies with ``study_id % count == index``: stable as studies are added, disjoint across shards."""
    return [j for j in jobs if j.study_id % count == index]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {text!r}: need 0 <= I < N")
    return i, n
