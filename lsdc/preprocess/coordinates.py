"""Coordinate rows -> at most one point per (study, condition, level), and a record of every repeat.

Coordinate files merged from several sources repeat rows. A row repeated verbatim (the same series,
instance and x, y as an earlier row of its key) is one point: it is kept once, with a note per
extra line. Rows of one key that disagree (another series, instance or x/y) cannot all be right and
none is preferred: the key becomes no sample, with one skip naming every line, and the rest of the
file converts as usual. The key is :data:`lsdc.core.readers.COORD_KEY`: a bilateral condition
already names its side, so left and right are different keys.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.readers import COORD_KEY
from ..core.schema import CONDITION_VIEW
from ..store.reasons import Reason
from .records import skip

#: what a coordinate row says beyond its key; rows of one key that differ in any of these conflict
POINT_COLUMNS = ("series_id", "instance_number", "x", "y")


def resolve_repeats(points: pd.DataFrame, path) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    """``points`` as from ``read_coordinates(path, all_rows=True)`` -> (one row per key that has a
    single point, in file order, without the ``line`` column; skip records of conflicting keys;
    notes of collapsed repeats)."""
    name = Path(path).name
    keys = points.duplicated(list(COORD_KEY), keep=False)
    if not keys.any():
        return points.drop(columns="line"), [], []
    skips, notes, drop = [], [], set()
    for key, rows in points[keys].groupby(list(COORD_KEY), sort=False):
        lines = [int(v) for v in rows["line"]]
        first = rows.iloc[0]
        where = _where(key, first)
        if (rows[list(POINT_COLUMNS)] == first[list(POINT_COLUMNS)]).all(axis=None):
            drop.update(rows.index[1:])
            for line in lines[1:]:
                notes.append(skip(Reason.COORDINATE_ROW_REPEATED, **where,
                                  detail=f"{name} line {line} repeats line {lines[0]} ({_point(first)})"))
        else:
            drop.update(rows.index)
            if rows["series_id"].nunique() > 1:
                where["series_id"] = None
            shown = "; ".join(f"line {line}: {_point(r)}" for line, (_, r) in zip(lines, rows.iterrows()))
            skips.append(skip(Reason.CONFLICTING_COORDINATES, **where,
                              detail=f"{name} lines {', '.join(map(str, lines))} give study {int(key[0])} "
                                     f"{key[1]} {key[2]} different points ({shown}); none is used"))
    return points.drop(index=sorted(drop)).drop(columns="line"), skips, notes


def _where(key, row) -> dict:
    study_id, condition, level = key
    return dict(study_id=int(study_id), series_id=int(row["series_id"]), view=CONDITION_VIEW[condition],
                condition=condition, level=level)


def _point(row) -> str:
    # every digit of x and y (Python's shortest exact repr): two points a rounding apart must not read alike
    return (f"series {int(row['series_id'])}, instance {int(row['instance_number'])}, "
            f"x {float(row['x'])}, y {float(row['y'])}")
