"""The CSV files of a synthetic dataset, in the exact Kaggle layout and column order (README "Running on
the real competition data")."""
from __future__ import annotations

import csv
from pathlib import Path

from ..core.readers import COORD_COLUMNS, SERIES_COLUMNS, SUBMISSION_HEADER, TRAIN_COLUMNS
from ..core.schema import CONDITION_TITLE, CONDITIONS, LEVEL_TITLE, LEVELS, SEVERITIES, row_id

UNIFORM = f"{1 / 3:.6f}"


def _write(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def write_tables(out_dir: Path, records: list) -> None:
    """train.csv, train_label_coordinates.csv, train_series_descriptions.csv, train_oracle.csv and,
    with test studies, test_series_descriptions.csv, sample_submission.csv, test_labels.csv,
    test_label_coordinates.csv, test_oracle.csv. ``<split>_oracle.csv`` (sample_submission format) is
    the best possible submission for every cell, blank ones included: the posterior of the cell's
    latent severity tilted by the metric's row weights (labels.oracle_submission)."""
    for split in ("train", "test"):
        recs = sorted((r for r in records if r["split"] == split), key=lambda r: r["study_id"])
        if split == "test" and not recs:
            continue
        labels_name = "train.csv" if split == "train" else "test_labels.csv"
        _write(out_dir / labels_name, TRAIN_COLUMNS, ([r["study_id"]] + r["labels"] for r in recs))
        _write(out_dir / f"{split}_label_coordinates.csv", COORD_COLUMNS,
               ((r["study_id"], sid, inst, CONDITION_TITLE[c], LEVEL_TITLE[lv], x, y)
                for r in recs for sid, inst, c, lv, x, y in r["coordinates"]))
        _write(out_dir / f"{split}_series_descriptions.csv", SERIES_COLUMNS,
               ((r["study_id"], sid, desc) for r in recs for sid, desc in r["series"]))
        _write(out_dir / f"{split}_oracle.csv", SUBMISSION_HEADER,
               ((row_id(r["study_id"], c, lv), *(f"{v:.8g}" for v in r["oracle"][k]))
                for r in recs for k, (c, lv) in enumerate((c, lv) for c in CONDITIONS for lv in LEVELS)))
        if split == "test":
            _write(out_dir / "sample_submission.csv", SUBMISSION_HEADER,
                   ((row_id(r["study_id"], c, lv), UNIFORM, UNIFORM, UNIFORM)
                    for r in recs for c in CONDITIONS for lv in LEVELS))


def label_mix(records: list) -> dict:
    """Fraction of each severity (and blank) over all cells of the given studies."""
    cells = [v for r in records for v in r["labels"]]
    n = max(len(cells), 1)
    return {**{k: sum(v == k for v in cells) / n for k in SEVERITIES}, "blank": sum(v == "" for v in cells) / n}
