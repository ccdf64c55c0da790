"""Repeated coordinate rows never abort a conversion: a verbatim repeat is read once (a note), rows of one
(study, condition, level) that disagree lose that sample only (a skip naming the file and every line)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lsdc.core.cli import main
from lsdc.core.readers import read_coordinates
from lsdc.core.schema import CONDITION_VIEW, LEFT_NFN, RIGHT_NFN, SPINAL, VIEWS
from lsdc.preprocess.coordinates import resolve_repeats
from lsdc.store.layout import REPORT_FILE
from lsdc.store.reader import crops_array, read_index

COORDS = "train_label_coordinates.csv"
HEADER = "study_id,series_id,instance_number,condition,level,x,y"


# -- the rule, on small files ----------------------------------------------------------------------
def _resolve(tmp_path, *rows):
    path = tmp_path / "c.csv"
    path.write_text("\n".join((HEADER,) + rows) + "\n")
    return resolve_repeats(read_coordinates(path, all_rows=True), path)


def test_a_verbatim_repeat_is_read_once_with_a_note_per_extra_line(tmp_path):
    row = "7,22,8,Spinal Canal Stenosis,L4/L5,320.5,300.25"
    points, skips, notes = _resolve(tmp_path, row, "7,22,9,Spinal Canal Stenosis,L5/S1,1,2", row,
                                    "7,22,8,Spinal Canal Stenosis,L4/L5,320.50,300.250")  # the same numbers
    assert points.level.tolist() == ["l4_l5", "l5_s1"] and "line" not in points.columns
    assert skips == []
    assert [n["reason"] for n in notes] == ["coordinate_row_repeated"] * 2
    assert [n["detail"].split(" (")[0] for n in notes] == ["c.csv line 4 repeats line 2", "c.csv line 5 repeats line 2"]
    assert (notes[0]["study_id"], notes[0]["series_id"], notes[0]["condition"], notes[0]["level"]) == \
        (7, 22, SPINAL, "l4_l5")


@pytest.mark.parametrize("other, series_id", [
    ("7,22,9,Spinal Canal Stenosis,L4/L5,320.5,300.25", 22),  # another instance
    ("7,22,8,Spinal Canal Stenosis,L4/L5,320.5,301", 22),  # another y
    ("7,23,8,Spinal Canal Stenosis,L4/L5,320.5,300.25", None),  # another series: no one series to name
])
def test_rows_that_disagree_skip_their_cell_only_and_name_every_line(tmp_path, other, series_id):
    row = "7,22,8,Spinal Canal Stenosis,L4/L5,320.5,300.25"
    points, skips, notes = _resolve(tmp_path, row, "7,22,9,Spinal Canal Stenosis,L5/S1,1,2", row, other)
    assert points.level.tolist() == ["l5_s1"]  # the cell is gone, the rest stays
    assert notes == [] and len(skips) == 1
    s = skips[0]
    assert (s["reason"], s["study_id"], s["series_id"], s["view"], s["condition"], s["level"]) == \
        ("conflicting_coordinates", 7, series_id, CONDITION_VIEW[SPINAL], SPINAL, "l4_l5")
    assert s["detail"].startswith("c.csv lines 2, 4, 5 give study 7 spinal_canal_stenosis l4_l5 different points")
    assert "np." not in s["detail"]


def test_left_and_right_are_different_cells(tmp_path):
    points, skips, notes = _resolve(tmp_path, "7,23,3,Left Neural Foraminal Narrowing,L5/S1,10,20",
                                    "7,23,4,Right Neural Foraminal Narrowing,L5/S1,30,20")
    assert points.condition.tolist() == [LEFT_NFN, RIGHT_NFN] and skips == notes == []


# -- end to end: the converter, on the shared 4-study set ----------------------------------------------
@pytest.fixture(scope="module")
def data(synth_factory):
    return synth_factory.dataset(4, 11, 1, labels="clean")  # tests/test_preprocess.py's set, built once


@pytest.fixture(scope="module")
def clean(synth_factory, data):
    return synth_factory.store(data)


def _convert_with(data: Path, tmp_path: Path, edit) -> tuple[int, str, dict, Path, dict]:
    """A copy of ``data`` whose coordinate file's lines went through ``edit``, converted by the CLI:
    (exit code, stderr, report, store, what ``edit`` returned)."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    lines = (copy / COORDS).read_text().splitlines()
    picked = edit(lines)
    (copy / COORDS).write_text("\n".join(lines) + "\n")
    out, err = tmp_path / "store", io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["preprocess", str(copy), str(out), "--workers", "1", "--no-progress"])
    return rc, err.getvalue(), json.loads((out / REPORT_FILE).read_text()), out, picked


def _key(line: str) -> tuple:
    study, _, _, condition, level = line.split(",")[:5]
    return int(study), condition.lower().replace(" ", "_"), level.lower().replace("/", "_")


def test_a_file_with_a_verbatim_repeat_converts_fully(data, clean, tmp_path):
    def repeat_a_foraminal_row(lines):
        k = next(i for i, line in enumerate(lines) if "Neural Foraminal" in line)
        lines.insert(k + 3, lines[k])  # further down, as a merged file has it: line k + 4 repeats line k + 1
        return k + 1, k + 4
    rc, err, rep, out, (first, again) = _convert_with(data, tmp_path, repeat_a_foraminal_row)
    assert rc == 0 and err == ""
    for view in VIEWS:  # the same samples as without the repeat
        pd.testing.assert_frame_equal(read_index(out, view), read_index(clean, view))
        np.testing.assert_array_equal(crops_array(out, view)[:], crops_array(clean, view)[:])
    notes = [n for n in rep["notes"] if n["reason"] == "coordinate_row_repeated"]
    assert len(notes) == 1 and rep["note_reasons"]["coordinate_row_repeated"] == 1
    assert notes[0]["detail"].startswith(f"{COORDS} line {again} repeats line {first} (series ")
    assert not any(s["reason"] == "conflicting_coordinates" for s in rep["skipped"])


def test_rows_that_disagree_lose_their_sample_only_and_the_report_names_both_lines(data, clean, tmp_path):
    def move_a_spinal_point(lines):
        k = next(i for i, line in enumerate(lines) if "Spinal Canal" in line)
        fields = lines[k].split(",")
        fields[5] = f"{float(fields[5]) + 5:.2f}"  # the same instance, x 5 px further
        lines.append(",".join(fields))
        return k + 1, len(lines), _key(lines[k])
    rc, err, rep, out, (line_a, line_b, key) = _convert_with(data, tmp_path, move_a_spinal_point)
    assert rc == 0 and err == ""
    [skip] = [s for s in rep["skipped"] if s["reason"] == "conflicting_coordinates"]
    assert (skip["study_id"], skip["condition"], skip["level"]) == key
    assert skip["detail"].startswith(f"{COORDS} lines {line_a}, {line_b} give study {key[0]} {key[1]} {key[2]} ")
    assert not any(s["reason"] == "no_coordinates" and (s["study_id"], s["condition"], s["level"]) == key
                   for s in rep["skipped"]), "one skip per cell: the conflict, not also 'no coordinates'"
    for view in VIEWS:  # everything else is converted, pixel for pixel
        a, b = read_index(out, view), read_index(clean, view)
        keep = ~((b.study_id == key[0]) & (b.condition == key[1]) & (b.level == key[2]))
        assert len(b) - keep.sum() == (view == CONDITION_VIEW[SPINAL])
        pd.testing.assert_frame_equal(a, b[keep].reset_index(drop=True))
        np.testing.assert_array_equal(crops_array(out, view)[:], crops_array(clean, view)[:][keep.to_numpy()])
