"""Readers of the competition CSV files, checking columns and values.

Each returns a pandas DataFrame with typed columns; any bad cell raises :class:`InputError` naming the
file, line and value (the line an editor shows: the header is line 1, blank lines count). IDs are
parsed to int here, so no caller ever joins raw text into a path.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from .errors import InputError, where
from .schema import (BLANK, CONDITION_FROM_TITLE, LABEL_COLUMNS, LEVEL_FROM_TITLE, SEVERITY_INDEX, SUBMISSION_COLUMNS,
                     VIEW_FROM_DESCRIPTION, parse_id, parse_row_id, plain)

TRAIN_COLUMNS = ("study_id",) + LABEL_COLUMNS
COORD_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
SERIES_COLUMNS = ("study_id", "series_id", "series_description")
SUBMISSION_HEADER = ("row_id",) + SUBMISSION_COLUMNS


def _read_csv(path, required) -> pd.DataFrame:
    """All cells as text (blank = ''), indexed by line number, after checking the file exists and has
    the required columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    data = path.read_bytes()  # read once: pandas parses it, _data_lines numbers its lines
    try:
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV file ({e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    df.index = _data_lines(data, len(df))
    return df


def _data_lines(data: bytes, rows: int) -> list[int]:
    """The line of each data row. pandas skips blank lines, and an editor counts them, so row i is
    not always line i + 2; when a quoted field spans lines the counts disagree and i + 2 is used."""
    lines = [n for n, text in enumerate(data.split(b"\n"), 1) if text.strip()][1:]  # [0]: header
    return lines if len(lines) == rows else list(range(2, rows + 2))


def _ids(df, path, column) -> list[int]:
    return [parse_id(v, path, line, column) for line, v in df[column].items()]


def _number(value: str, path, line: int, column) -> float:
    try:
        out = float(value)
    except ValueError:
        raise InputError(f"{where(path, line, column)}: {value!r} is not a number") from None
    if not math.isfinite(out):
        raise InputError(f"{where(path, line, column)}: {value!r} is not a finite number")
    return out


def _no_duplicates(df, lines, path, keys) -> None:
    """``lines``: the CSV line of each row of ``df`` (the messages name it)."""
    dup = df.duplicated(list(keys), keep="first")
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        key = tuple(df.iloc[i][k] for k in keys)
        first = next(j for j in range(i) if tuple(df.iloc[j][k] for k in keys) == key)
        shown = ", ".join(f"{k} {plain(v)}" for k, v in zip(keys, key))
        raise InputError(f"{where(path, lines[i])}: duplicate {'/'.join(keys)} ({shown}), "
                         f"first on line {lines[first]}")


def read_train(path) -> pd.DataFrame:
    """train.csv -> study_id (int) + 25 label columns as codes 0/1/2 (Normal/Mild, Moderate, Severe), -1 blank."""
    raw = _read_csv(path, TRAIN_COLUMNS)
    out = pd.DataFrame({"study_id": _ids(raw, path, "study_id")})
    for col in LABEL_COLUMNS:
        codes = []
        for line, v in raw[col].items():
            v = v.strip()
            if v == "":
                codes.append(BLANK)
            elif v in SEVERITY_INDEX:
                codes.append(SEVERITY_INDEX[v])
            else:
                raise InputError(f"{where(path, line, col)}: unknown severity {v!r}; "
                                 f"expected one of {list(SEVERITY_INDEX)} or blank")
        out[col] = pd.array(codes, dtype="int8")
    _no_duplicates(out, raw.index, path, ("study_id",))
    return out


#: one coordinate row per key: the bilateral conditions name their side, so a side is a condition here
COORD_KEY = ("study_id", "condition", "level")


def read_coordinates(path, all_rows: bool = False) -> pd.DataFrame:
    """train_label_coordinates.csv -> study_id, series_id, instance_number (int), condition, level
    (snake case, as in schema), x, y (float pixel column/row).

    A second row for one (study_id, condition, level) is an error, unless ``all_rows``: then every
    row is returned, with its ``line`` in the file, for the caller to resolve and report
    (:mod:`lsdc.preprocess.coordinates` does, for the converter)."""
    raw = _read_csv(path, COORD_COLUMNS)
    out = pd.DataFrame({c: _ids(raw, path, c) for c in ("study_id", "series_id", "instance_number")})
    for col, table in (("condition", CONDITION_FROM_TITLE), ("level", LEVEL_FROM_TITLE)):
        vals = []
        for line, v in raw[col].items():
            if v.strip() not in table:
                raise InputError(f"{where(path, line, col)}: unknown {col} {v!r}; expected one of {list(table)}")
            vals.append(table[v.strip()])
        out[col] = vals
    for col in ("x", "y"):
        out[col] = [_number(v, path, line, col) for line, v in raw[col].items()]
    if all_rows:
        out["line"] = raw.index.to_numpy()
    else:
        _no_duplicates(out, raw.index, path, COORD_KEY)
    return out


def read_series_descriptions(path, strict: bool = True) -> pd.DataFrame:
    """*_series_descriptions.csv -> study_id, series_id (int), series_description, view.

    With ``strict`` an unknown description is an error; otherwise its ``view`` is None so the
    caller can skip the series and record why.
    """
    raw = _read_csv(path, SERIES_COLUMNS)
    out = pd.DataFrame({c: _ids(raw, path, c) for c in ("study_id", "series_id")})
    out["series_description"] = [v.strip() for v in raw["series_description"]]
    views = []
    for line, v in zip(raw.index, out["series_description"]):
        if v not in VIEW_FROM_DESCRIPTION and strict:
            raise InputError(f"{where(path, line, 'series_description')}: unknown series description "
                             f"{v!r}; expected one of {list(VIEW_FROM_DESCRIPTION)}")
        views.append(VIEW_FROM_DESCRIPTION.get(v))
    out["view"] = pd.Series(views, dtype=object)  # None (not NaN) marks an unknown description
    _no_duplicates(out, raw.index, path, ("study_id", "series_id"))
    return out


def read_sample_submission(path) -> pd.DataFrame:
    """sample_submission.csv (or a submission) -> row_id, study_id, condition, level and the three
    probability columns as float (values are checked by the metric, not here)."""
    raw = _read_csv(path, SUBMISSION_HEADER)
    parsed = []
    for line, v in raw["row_id"].items():
        try:
            parsed.append(parse_row_id(v.strip()))
        except ValueError:
            raise InputError(f"{where(path, line, 'row_id')}: malformed row_id {v!r}; expected "
                             "'<study_id>_<condition>_<level>'") from None
    out = pd.DataFrame({"row_id": [v.strip() for v in raw["row_id"]]})
    out["study_id"] = [p[0] for p in parsed]
    out["condition"] = [p[1] for p in parsed]
    out["level"] = [p[2] for p in parsed]
    for col in SUBMISSION_COLUMNS:
        out[col] = [_number(v, path, line, col) if v.strip() != "" else float("nan") for line, v in raw[col].items()]
    _no_duplicates(out, raw.index, path, ("row_id",))
    return out
