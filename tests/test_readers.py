"""Competition CSV readers: typed output, and one clear error naming file, line and value."""
import pytest

from lsdc.core import schema
from lsdc.core.errors import InputError
from lsdc.core.readers import read_coordinates, read_sample_submission, read_series_descriptions, read_train


def _write(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def _train_row(study, value="Normal/Mild"):
    return [study] + [value] * len(schema.LABEL_COLUMNS)


def test_read_train_codes(tmp_path):
    row = _train_row(101)
    row[1], row[2], row[3] = "Moderate", "Severe", ""
    df = read_train(_write(tmp_path / "train.csv", ("study_id",) + schema.LABEL_COLUMNS, [row, _train_row(7)]))
    assert list(df.study_id) == [101, 7]
    assert df.iloc[0][schema.LABEL_COLUMNS[0]] == 1 and df.iloc[0][schema.LABEL_COLUMNS[1]] == 2
    assert df.iloc[0][schema.LABEL_COLUMNS[2]] == schema.BLANK
    assert (df.iloc[1][list(schema.LABEL_COLUMNS)] == 0).all()


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: r.__setitem__(4, "Mild"), r"line 2 column '.*': unknown severity 'Mild'"),
    (lambda r: r.__setitem__(0, "../x"), r"line 2 column 'study_id': ID '../x'"),
    (lambda r: r.__setitem__(0, "1.5"), r"ID '1.5'"),
])
def test_read_train_errors(tmp_path, mutate, needle):
    row = _train_row(5)
    mutate(row)
    path = _write(tmp_path / "train.csv", ("study_id",) + schema.LABEL_COLUMNS, [row])
    with pytest.raises(InputError, match=needle) as e:
        read_train(path)
    assert "train.csv" in str(e.value)


def test_read_train_missing_column_and_file(tmp_path):
    path = _write(tmp_path / "train.csv", ("study_id",) + schema.LABEL_COLUMNS[:-1], [[1] + ["Normal/Mild"] * 24])
    with pytest.raises(InputError, match="missing column.*l5_s1"):
        read_train(path)
    with pytest.raises(InputError, match="file not found"):
        read_train(tmp_path / "nope.csv")
    dup = _write(tmp_path / "dup.csv", ("study_id",) + schema.LABEL_COLUMNS, [_train_row(1), _train_row(1)])
    with pytest.raises(InputError, match="line 3: duplicate study_id"):
        read_train(dup)


COORD_HEADER = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")


def test_read_coordinates(tmp_path):
    df = read_coordinates(_write(tmp_path / "c.csv", COORD_HEADER, [
        [1, 22, 8, "Spinal Canal Stenosis", "L4/L5", 320.5, 300.25],
        [1, 23, 3, "Left Neural Foraminal Narrowing", "L5/S1", 10, 20]]))
    assert df.condition.tolist() == [schema.SPINAL, schema.LEFT_NFN]
    assert df.level.tolist() == ["l4_l5", "l5_s1"]
    assert df.x.tolist() == [320.5, 10.0] and df.instance_number.dtype.kind == "i"


@pytest.mark.parametrize("row, needle", [
    ([1, 22, 8, "Spinal Stenosis", "L4/L5", 1, 1], "line 2 column 'condition': unknown condition"),
    ([1, 22, 8, "Spinal Canal Stenosis", "L6/S1", 1, 1], "unknown level 'L6/S1'"),
    ([1, 22, 8, "Spinal Canal Stenosis", "L4/L5", "nan", 1], "column 'x'.*not a finite"),
    ([1, "a/b", 8, "Spinal Canal Stenosis", "L4/L5", 1, 1], "column 'series_id'"),
])
def test_read_coordinates_errors(tmp_path, row, needle):
    with pytest.raises(InputError, match=needle):
        read_coordinates(_write(tmp_path / "c.csv", COORD_HEADER, [row]))


def test_read_series_descriptions(tmp_path):
    path = _write(tmp_path / "s.csv", ("study_id", "series_id", "series_description"),
                  [[1, 2, "Sagittal T2/STIR"], [1, 3, "Axial T2"], [1, 4, "Coronal T2"]])
    with pytest.raises(InputError, match="line 4.*'Coronal T2'"):
        read_series_descriptions(path)
    df = read_series_descriptions(path, strict=False)
    assert df.view.tolist() == [schema.SAG_T2, schema.AX_T2, None]


def test_read_sample_submission(tmp_path):
    rid = schema.row_id(9, schema.SPINAL, "l1_l2")
    df = read_sample_submission(_write(tmp_path / "ss.csv", ("row_id",) + schema.SUBMISSION_COLUMNS,
                                       [[rid, 0.2, 0.3, 0.5]]))
    assert (df.study_id[0], df.condition[0], df.level[0], df.severe[0]) == (9, schema.SPINAL, "l1_l2", 0.5)
    bad = _write(tmp_path / "bad.csv", ("row_id",) + schema.SUBMISSION_COLUMNS, [["9_spine_l1_l2", 1, 0, 0]])
    with pytest.raises(InputError, match="line 2 column 'row_id': malformed row_id"):
        read_sample_submission(bad)


def test_a_repeated_coordinate_key_names_both_lines_in_plain_numbers(tmp_path):
    row = [4003253, 22, 8, "Spinal Canal Stenosis", "L4/L5", 320.5, 300.25]
    path = _write(tmp_path / "c.csv", COORD_HEADER, [row, [1, 23, 3, "Spinal Canal Stenosis", "L1/L2", 1, 2], row])
    with pytest.raises(InputError) as e:
        read_coordinates(path)
    msg = str(e.value)
    assert "c.csv line 4: duplicate study_id/condition/level" in msg and "first on line 2" in msg
    assert "study_id 4003253" in msg and "np." not in msg


def test_all_rows_keeps_repeats_with_the_line_an_editor_shows(tmp_path):
    """Blank lines are skipped as rows but still counted, so a line number points at the right row."""
    path = tmp_path / "c.csv"
    row = "1,22,8,Spinal Canal Stenosis,L4/L5,320.5,300.25"
    path.write_text(",".join(COORD_HEADER) + f"\n{row}\n\n  \n{row}\n1,22,9,Spinal Canal Stenosis,L5/S1,1,2\n\n")
    df = read_coordinates(path, all_rows=True)
    assert df.line.tolist() == [2, 5, 6]
    assert df.study_id.tolist() == [1, 1, 1] and df.level.tolist() == ["l4_l5", "l4_l5", "l5_s1"]
    path.write_text(path.read_text().replace("L5/S1", "L6/S1"))
    with pytest.raises(InputError, match="line 6 column 'level'"):
        read_coordinates(path, all_rows=True)


def test_ids_from_numpy_are_plain_ints_and_errors_print_plain_numbers():
    import numpy as np
    value = schema.parse_id(np.int64(4003253))
    assert value == 4003253 and type(value) is int
    with pytest.raises(InputError) as e:
        schema.parse_id(np.float64(1.5), "c.csv", 3, "series_id")
    assert str(e.value) == "c.csv line 3 column 'series_id': ID 1.5 is not a non-negative integer"
