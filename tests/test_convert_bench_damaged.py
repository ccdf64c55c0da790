"""`lsdc bench convert --data DIR` on a folder holding a damaged DICOM file: both sides are timed over
the files that can be read, and the damaged file is listed (path + reason) rather than a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from lsdc.benchmarks import convert_bench
from lsdc.benchmarks.convert_bench import _files, _readable_view, _unreadable, _unreadable_in
from lsdc.core.cli import main


def _unlabelled_slice(data: Path) -> Path:
    """A slice no coordinate row points at, in the middle of its series (the converter can drop it
    without losing a label)."""
    coords = pd.read_csv(data / "train_label_coordinates.csv")
    labelled = set(zip(coords.series_id, coords.instance_number))
    files = _files(data)
    for f in files[len(files) // 3:]:
        inst = int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber)
        if (int(f.parent.name), inst) not in labelled:
            return f
    raise AssertionError("every slice is labelled")


@pytest.fixture(scope="module")
def damaged(synth_factory, small_dataset, tmp_path_factory):
    """(data dir, the truncated file): a copy of the small synthetic set (3 studies), one slice cut to half its
    bytes."""
    data = synth_factory.copy(small_dataset, tmp_path_factory.mktemp("bench_damaged") / "data")
    victim = _unlabelled_slice(data)
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) // 2])
    return data, victim


def test_bench_convert_survives_a_truncated_file(damaged, tmp_path, capsys, monkeypatch):
    data, victim = damaged
    # the Numba kernels are not what this test is about (test_preprocess times them): a stand-in
    monkeypatch.setattr(convert_bench, "kernel_speed",
                        lambda repeats: {"k": {"numba_s": 1e-3, "numpy_s": 2e-3, "speedup": 2.0}})
    n_files = len(_files(data))
    out = tmp_path / "bench.json"
    assert main(["bench", "convert", "--data", str(data), "--repeats", "1", "--workers", "1",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for key in ("pydicom_read_slices_per_s", "converter_slices_per_s",
                "pydicom_read_parallel_slices_per_s", "converter_parallel_slices_per_s"):
        assert isinstance(res[key], float) and res[key] > 0, key
    assert res["slices"] == n_files - 1  # both sides timed over the readable files only
    assert res["unreadable_count"] == 1
    [bad] = res["unreadable"]
    assert Path(bad["path"]) == victim and bad["reason"] == "truncated" and bad["detail"]
    printed = capsys.readouterr().out
    assert "converter / pydicom" in printed
    assert "1 unreadable file(s)" in printed and str(victim) in printed and "truncated" in printed


def test_unreadable_files_and_the_readable_view(damaged, tmp_path):
    """The screening names each damaged file with lsdc's reason code (a header cut short too), the
    pool split finds the same, and the converter's view holds every other file but not those."""
    data, victim = damaged
    files = _files(data)
    header_cut = tmp_path / "cut.dcm"
    header_cut.write_bytes(victim.read_bytes()[:200])
    found = _unreadable_in([files[0], victim, header_cut])
    assert [(Path(r["path"]), r["reason"]) for r in found][0] == (victim, "truncated")
    assert Path(found[1]["path"]) == header_cut and found[1]["reason"] in {"unreadable", "no_pixels", "no_geometry"}
    assert _unreadable(files, 2) == _unreadable_in(files) == found[:1]

    view = _readable_view(data, [victim], tmp_path / "view")
    images = data / "train_images"
    seen = {p.relative_to(view / "train_images") for p in (view / "train_images").glob("*/*/*.dcm")}
    assert seen == {p.relative_to(images) for p in images.glob("*/*/*.dcm")} - {victim.relative_to(images)}
    assert (view / "train_series_descriptions.csv").read_text() == (data / "train_series_descriptions.csv").read_text()
    assert victim.exists()  # the data folder itself is left as it was
