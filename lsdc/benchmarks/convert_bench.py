"""What the one-time conversion costs: :func:`bench_convert` (the `lsdc bench convert` verb:
lsdc.benchmarks.cli).

- converter slices/s: the whole `preprocess()` (plan, read, decode, sort, window, crop, assemble) on
  one process, against the raw pydicom read + decode rate of the very same files in the same run,
  the two timed in turns (median of ``repeats`` after a warm-up round); and with all cores (the
  worker pool against the same reads split over as many processes) beside it;
- kernel speed-up: each Numba kernel against its NumPy reference (``kernel_speedup`` is the smallest);
- peak RSS of a conversion, measured in a fresh process for half and for all the studies (flat means
  memory does not grow with the dataset).
Without ``data_dir`` a small synthetic dataset is written to a temporary folder first.

Files that raw pydicom cannot read and decode (a truncated or otherwise damaged file) are found in an
untimed pass first and left out of both sides: the pydicom reads skip them and the converter runs on
a view of the dataset without them, so both rates count the same files. They are listed (path, lsdc's
reason code, pydicom's error) under ``unreadable`` in the JSON and after the table.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pydicom

from ..core.errors import InputError
from ..preprocess.convert import preprocess
from ..preprocess.kernel_bench import kernel_speed
from ..preprocess.plan import make_plan
from ..preprocess.series import SeriesError, read_slice
from .timing import interleaved_rates

# Peak RSS of a conversion in a fresh process. VmHWM, not ru_maxrss: Linux carries ru_maxrss across
# exec, so a child of this (torch-importing) process would report the parent's peak.
_RSS_SNIPPET = """
import json, sys
from lsdc.benchmarks.timing import peak_rss_mb
from lsdc.preprocess.convert import preprocess
rep = preprocess(sys.argv[1], sys.argv[2], workers=1, progress=False)
print(json.dumps({"rss_mb": peak_rss_mb(), "studies": rep["studies"]}))
"""


def _files(data_dir) -> list[Path]:
    return [f for j in make_plan(data_dir).jobs for sid in sorted(j.series_views) for f in sorted((j.study_dir / str(sid)).glob("*.dcm"))]


def _pydicom_read(files) -> None:
    for f in files:
        pydicom.dcmread(f).pixel_array


def _unreadable_in(files) -> list[dict]:
    """{path, reason, detail} of each file whose raw pydicom read + decode raises. ``reason`` is the
    code lsdc's own reader gives the file (e.g. ``truncated``), else the pydicom exception's name."""
    out = []
    for f in files:
        try:
            pydicom.dcmread(f).pixel_array
            continue
        except Exception as e:  # anything pydicom raises on a damaged file
            detail = f"{type(e).__name__}: {e}"
            reason = type(e).__name__
        try:
            read_slice(f)
        except SeriesError as e:
            reason = e.reason
        except Exception:  # the reader's own bug is not this benchmark's to report
            pass
        out.append({"path": str(f), "reason": reason, "detail": detail[:300]})
    return out


def _unreadable(files, workers: int) -> list[dict]:
    """:func:`_unreadable_in` over all files, split over ``workers`` processes (untimed), by path."""
    if workers <= 1 or len(files) < 4 * workers:
        found = _unreadable_in(files)
    else:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            found = [r for part in pool.map(_unreadable_in, [files[i::workers] for i in range(workers)])
                     for r in part]
    return sorted(found, key=lambda r: r["path"])


def _readable_view(data_dir: Path, bad: list[Path], dst: Path) -> Path:
    """The dataset without the ``bad`` files, as links: the top-level files (CSVs) and every study and
    series folder holding no bad file linked whole, the others rebuilt from links to their good files."""
    images = data_dir / "train_images"
    bad_rel = {p.relative_to(images) for p in bad}
    bad_dirs = {r.parent for r in bad_rel} | {r.parent.parent for r in bad_rel}
    dst.mkdir(parents=True)
    for f in data_dir.iterdir():
        if f.name != "train_images":
            (dst / f.name).symlink_to(f.resolve())

    def link_tree(src: Path, out: Path, rel: Path) -> None:
        out.mkdir()
        for child in sorted(src.iterdir()):
            child_rel = rel / child.name
            if child_rel in bad_rel:
                continue
            if child_rel in bad_dirs:
                link_tree(child, out / child.name, child_rel)
            else:
                (out / child.name).symlink_to(child.resolve())

    link_tree(images, dst / "train_images", Path())
    return dst


def _pydicom_read_parallel(files, workers: int) -> None:
    """The same reads split over ``workers`` processes (the converter's pool has as many)."""
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        list(pool.map(_pydicom_read, [files[i::workers] for i in range(workers)]))


def _subset(data_dir: Path, k: int, dst: Path) -> Path:
    """A dataset view with the first k studies: filtered CSVs, the images linked, not copied."""
    dst.mkdir(parents=True)
    series = pd.read_csv(data_dir / "train_series_descriptions.csv")
    keep = sorted(series.study_id.unique())[:k]
    for name in ("train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv"):
        df = pd.read_csv(data_dir / name, dtype=str, keep_default_na=False)
        df[df.study_id.astype(int).isin(keep)].to_csv(dst / name, index=False)
    (dst / "train_images").symlink_to((data_dir / "train_images").resolve())
    return dst


def _peak_rss(data_dir: Path, work: Path) -> dict:
    out = {}
    n = len(pd.read_csv(data_dir / "train_series_descriptions.csv").study_id.unique())
    for k in sorted({max(1, n // 2), n}):
        sub = _subset(data_dir, k, work / f"subset{k}")
        res = subprocess.run([sys.executable, "-c", _RSS_SNIPPET, str(sub), str(work / f"rss{k}")],
                             capture_output=True, text=True, check=True)
        out[k] = json.loads(res.stdout.strip().splitlines()[-1])["rss_mb"]
    return out


def bench_convert(data_dir=None, studies: int = 16, repeats: int = 3, workers: int | None = None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lsdc-bench-convert-"))
    try:
        if data_dir is None:
            from ..synth.generate import synth
            data_dir = work / "data"
            synth(data_dir, studies, seed=0, workers=os.cpu_count())
        data_dir = Path(data_dir)
        if not (data_dir / "train_series_descriptions.csv").is_file():
            raise InputError(f"{data_dir}: no train_series_descriptions.csv (a competition-format folder?)")
        all_files = _files(data_dir)
        cores = workers or os.cpu_count()
        unreadable = _unreadable(all_files, cores)
        bad = {Path(r["path"]) for r in unreadable}
        files = [f for f in all_files if f not in bad]
        if not files:
            raise InputError(f"{data_dir}: none of the {len(all_files)} slice files can be read "
                             f"(first: {unreadable[0]['path']}: {unreadable[0]['detail']})")
        if bad:  # the converter gets the same files as the pydicom side: a view without the bad ones
            data_dir = _readable_view(data_dir, sorted(bad), work / "readable")
        out = work / "store"
        n = len(files)
        # Each ratio's two sides are timed in turns (same background load); the store a conversion
        # wrote is deleted between calls, untimed.
        rates = interleaved_rates({
            "read": (lambda: _pydicom_read(files), n),
            "convert": (lambda: preprocess(data_dir, out, workers=1, progress=False), n),
            "read_all": (lambda: _pydicom_read_parallel(files, cores), n),
            "convert_all": (lambda: preprocess(data_dir, out, workers=cores, progress=False), n),
        }, repeats, between=lambda: shutil.rmtree(out, ignore_errors=True))
        read, conv1, read_all, conv_all = (rates[k][0] for k in ("read", "convert", "read_all", "convert_all"))
        kernels = kernel_speed(repeats=5)
        rss = _peak_rss(data_dir, work)
        return {
            "slices": len(files),  # timed on both sides: the files raw pydicom reads
            "unreadable_count": len(unreadable),
            "unreadable": unreadable,  # {path, reason, detail}: left out of both sides
            "pydicom_read_slices_per_s": read,
            "converter_slices_per_s": conv1,
            "converter_vs_pydicom": conv1 / read,  # same files, 1 process each
            "workers": cores,
            "pydicom_read_parallel_slices_per_s": read_all,
            "converter_parallel_slices_per_s": conv_all,
            "converter_parallel_vs_pydicom_parallel": conv_all / read_all,
            "kernels": kernels,
            "kernel_speedup": min(k["speedup"] for k in kernels.values()),
            "peak_rss_mb": max(rss.values()),
            "peak_rss_mb_by_studies": rss,
            "cores": os.cpu_count(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
