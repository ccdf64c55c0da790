"""DICOM studies -> the Zarr crop store, once, in parallel, resumably: :func:`preprocess`.

Studies are converted independently (a pool of worker processes), each committed atomically as a part
file; then the store is assembled from all parts. A rerun converts only the studies without a valid
part. ``shard_spec`` ``I/N`` converts only studies with ``study_id % N == I`` and stops before
assembly. The `lsdc preprocess` verb (lsdc.preprocess.cli) documents its command line and exit codes.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from .. import __version__
from ..core.config import Config
from ..core.errors import InputError
from ..store.layout import REPORT_FILE
from ..store.writer import assemble
from .crops import convert_study, study_fingerprint, warm_up_kernels
from .parts import clean_stale_tmp, part_path, read_part, save_part
from .plan import StudyJob, build_jobs, input_files, parse_shard, shard


def _convert_and_commit(job: StudyJob, pcfg, out_dir: str, fingerprint: str) -> tuple[int, int]:
    """Worker: one study -> one committed part. Returns (study_id, slices read)."""
    r = convert_study(job, pcfg, fingerprint)
    save_part(part_path(out_dir, job.study_id), r.fingerprint, r.crops, r.rows, r.volumes, r.volume_rows, r.skips,
              r.notes, r.series)
    return job.study_id, r.slices_read


def _largest_first(jobs):
    """Studies with the most files first (longest-processing-time order): the pool then ends on
    short tasks instead of one worker finishing a big study while the others idle. Parts are
    committed per study and assembled in study order, so the conversion order changes nothing else."""
    def n_files(job) -> int:
        n = 0
        for series_id in job.series_views:
            try:
                n += len(os.listdir(job.study_dir / str(series_id)))
            except OSError:  # missing folders are reported by the conversion itself
                pass
        return n
    return sorted(jobs, key=lambda job_fp: -n_files(job_fp[0]))


def _one_thread() -> None:
    """Pool workers already take one core each: a kernel's own threads would only oversubscribe."""
    import numba
    numba.set_num_threads(1)


def _todo(jobs, pcfg, out_dir) -> list[tuple[StudyJob, str]]:
    """(job, fingerprint) of every study without a valid committed part."""
    out = []
    for job in jobs:
        fp = study_fingerprint(job, pcfg)
        part = read_part(part_path(out_dir, job.study_id))
        if part is None or part.fingerprint != fp:
            out.append((job, fp))
    return out


def _run_jobs(jobs, pcfg, out_dir, workers: int, progress: bool) -> int:
    bar = tqdm(total=len(jobs), unit="study", desc="preprocess", disable=not progress)
    slices = 0
    if workers <= 1:
        for job, fp in jobs:
            slices += _convert_and_commit(job, pcfg, str(out_dir), fp)[1]
            bar.update()
    else:
        # fork is safe: numba runs the fork-safe workqueue layer (numba_setup) and no CUDA is touched
        # here; kernels compiled in the parent are inherited by every worker
        warm_up_kernels(pcfg)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_one_thread) as pool:
            futures = [pool.submit(_convert_and_commit, job, pcfg, str(out_dir), fp) for job, fp in _largest_first(jobs)]
            for f in as_completed(futures):
                slices += f.result()[1]
                bar.update()
    bar.close()
    return slices


def _versions() -> dict:
    import numba
    import numpy
    import pydicom
    import zarr
    return {"lsdc": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "zarr": zarr.__version__, "pydicom": pydicom.__version__, "numba": numba.__version__}


def _fingerprint(files: dict, parts) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + Path(files[name]).read_bytes())
    for p in parts:
        h.update(p.fingerprint.encode())
    return h.hexdigest()


def preprocess(data_dir, out_dir, split: str = "train", coords=None, workers: int | None = None,
               shard_spec: str | None = None, cfg: Config | None = None, progress: bool = True) -> dict:
    """Convert (the shard of) the studies under ``data_dir`` into the store at ``out_dir``; returns the report."""
    cfg = cfg or Config()
    pcfg = cfg.preprocess
    t0 = time.perf_counter()
    files = input_files(data_dir, split, coords)
    jobs, skips = build_jobs(data_dir, split, coords)
    if not jobs:
        raise InputError(f"{files['series']}: no studies to convert")
    sh = parse_shard(shard_spec)
    mine = shard(jobs, *sh) if sh else jobs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(out_dir)
    todo = _todo(mine, pcfg, out_dir)
    workers = os.cpu_count() if workers is None else workers
    slices = _run_jobs(todo, pcfg, out_dir, min(workers, len(todo)), progress)
    cfg.save(out_dir)
    report = {"split": split, "studies": len(mine), "converted_now": len(todo),
              "resumed": len(mine) - len(todo), "slices_read": slices}
    if sh:
        report["shard"] = f"{sh[0]}/{sh[1]}"
        parts = [read_part(part_path(out_dir, j.study_id)) for j in mine]
        report["skipped"] = [s for p in parts for s in p.skips]
        name = f"report.shard-{sh[0]}-of-{sh[1]}.json"
    else:
        parts = [read_part(part_path(out_dir, j.study_id)) for j in jobs]
        attrs = {"split": split, "versions": _versions(), "fingerprint": _fingerprint(files, parts),
                 "inputs": {k: str(v) for k, v in files.items()}}
        report["counts"] = assemble(out_dir, parts, pcfg, attrs)
        report["skipped"] = skips + [s for p in parts for s in p.skips]
        name = REPORT_FILE
    report.update(_stack_report(parts))
    report["seconds"] = round(time.perf_counter() - t0, 3)
    report["skip_reasons"] = _tally(report["skipped"])
    (out_dir / name).write_text(json.dumps(report, indent=1, default=_json_default))
    return report


def _stack_report(parts) -> dict:
    """How the series split into stacks: counts, the split series, and every note (a slice dropped or
    a repeated position collapsed: recorded, but no sample was lost to it)."""
    series = [r for p in parts for r in p.series]
    split = [r for r in series if r["stacks"] > 1]
    notes = [n for p in parts for n in p.notes]
    return {"stacks": {"series_read": len(series), "split_series": len(split),
                       "collapsed_duplicates": sum(r["collapsed"] for r in series),
                       "dropped_slices": sum(r["dropped"] for r in series)},
            "split_series": split, "notes": notes, "note_reasons": _tally(notes)}


def _tally(skipped) -> dict:
    out: dict[str, int] = {}
    for s in skipped:
        out[s["reason"]] = out.get(s["reason"], 0) + 1
    return dict(sorted(out.items()))


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")
