"""DICOM studies -> the Zarr crop store, once, in parallel, resumably: :func:`preprocess`.

Studies are converted independently (a pool of worker processes), each committed atomically as a part
file; then the store is assembled from all parts, flushed to disk and committed by writing its report,
and only then are the parts deleted (unless ``keep_parts``). A rerun converts only the studies without
a valid part; a rerun on a committed store of the same inputs does nothing. ``shard_spec`` ``I/N``
converts only studies with ``study_id % N == I`` and stops before assembly, keeping its parts. The
`lsdc preprocess` verb (lsdc.preprocess.cli) documents its command line and exit codes.

Crash ordering (a ``kill -9`` anywhere, then the same command again):

- during conversion: the committed parts are reused, the rest converted, the store assembled;
- during assembly: the report was removed first, so the store is not complete; every part is still
  there, so the store is assembled again from them, converting nothing;
- after the commit, before or during the deletion of the parts: the store is complete for these
  inputs, so the rerun only finishes deleting the parts.

A rerun on a committed store whose parts are gone, with the same inputs, converts nothing and leaves
the store as it is (it reports it up to date): reconverting would cost the whole conversion again to
write the same bytes. With changed inputs (files, coordinates, crop spec) there is nothing to reuse,
so every study is converted again, into parts beside the old store, which stays readable until the
new assembly starts. Keep the parts (``keep_parts``) to reconvert only what changed.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import platform
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path


from .. import __version__
from ..core.config import Config
from ..core.errors import InputError
from ..core.progress import progress_bar
from ..store.layout import REPORT_FILE
from ..store.writer import assemble, commit, committed_report
from .crops import convert_study, study_fingerprint, warm_up_kernels
from .parts import clean_stale_tmp, part_path, parts_dir, read_part, remove_parts, save_part
from .plan import StudyJob, input_files, make_plan, parse_shard, shard


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


def _todo(jobs, fingerprints: dict, out_dir) -> list[tuple[StudyJob, str]]:
    """(job, fingerprint) of every study without a valid committed part."""
    out = []
    for job in jobs:
        fp = fingerprints[job.study_id]
        part = read_part(part_path(out_dir, job.study_id))
        if part is None or part.fingerprint != fp:
            out.append((job, fp))
    return out


def _run_jobs(jobs, pcfg, out_dir, workers: int, progress: bool) -> int:
    bar = progress_bar(total=len(jobs), unit="study", desc="preprocess", disable=not progress)
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


def _fingerprint(files: dict, study_fingerprints) -> str:
    """The store's: the input CSVs and every study's fingerprint, in study order (a valid part carries
    its study's, so this is known before converting anything)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + Path(files[name]).read_bytes())
    for fp in study_fingerprints:
        h.update(fp.encode())
    return h.hexdigest()


def preprocess(data_dir, out_dir, split: str = "train", coords=None, workers: int | None = None,
               shard_spec: str | None = None, cfg: Config | None = None, progress: bool = True,
               keep_parts: bool = False) -> dict:
    """Convert (the shard of) the studies under ``data_dir`` into the store at ``out_dir``; returns the
    report (``up_to_date`` True when the store was already complete for these inputs)."""
    cfg = cfg or Config()
    pcfg = cfg.preprocess
    t0 = time.perf_counter()
    files = input_files(data_dir, split, coords)
    plan = make_plan(data_dir, split, coords)
    if not plan.jobs:
        raise InputError(f"{files['series']}: no studies to convert")
    sh = parse_shard(shard_spec)
    mine = shard(plan.jobs, *sh) if sh else plan.jobs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(out_dir)
    fps = {job.study_id: study_fingerprint(job, pcfg) for job in mine}
    done = _up_to_date(out_dir, files, plan.jobs, fps, pcfg)
    if done is not None:
        if not sh and not keep_parts:
            _remove_parts(out_dir)  # a run killed after its commit left them (some or all)
        return {**done, "studies": len(mine), "converted_now": 0, "resumed": len(mine), "slices_read": 0,
                "seconds": round(time.perf_counter() - t0, 3), "up_to_date": True, **_shard_key(sh)}
    todo = _todo(mine, fps, out_dir)
    workers = os.cpu_count() if workers is None else workers
    slices = _run_jobs(todo, pcfg, out_dir, min(workers, len(todo)), progress)
    cfg.save(out_dir)
    report = {"split": split, "studies": len(mine), "converted_now": len(todo),
              "resumed": len(mine) - len(todo), "slices_read": slices, **_shard_key(sh)}
    if sh:  # a shard writes parts only; the assembling run (without --shard) reads every shard's
        parts = [read_part(part_path(out_dir, j.study_id)) for j in mine]
        report["skipped"] = [s for p in parts for s in p.skips]
        report.update(_stack_report(parts, []))
    else:
        parts = [read_part(part_path(out_dir, j.study_id)) for j in plan.jobs]
        fingerprint = _fingerprint(files, [p.fingerprint for p in parts])
        attrs = {"split": split, "versions": _versions(), "fingerprint": fingerprint,
                 "inputs": {k: str(v) for k, v in files.items()}}
        report["counts"] = assemble(out_dir, parts, pcfg, attrs)
        report["fingerprint"] = fingerprint
        report["skipped"] = plan.skips + [s for p in parts for s in p.skips]
        report.update(_stack_report(parts, plan.notes))
    report["seconds"] = round(time.perf_counter() - t0, 3)
    report["skip_reasons"] = _tally(report["skipped"])
    text = json.dumps(report, indent=1, default=_json_default)
    if sh:
        (out_dir / f"report.shard-{sh[0]}-of-{sh[1]}.json").write_text(text)
    else:
        commit(out_dir, text)  # the store is complete and on disk from here on
        if not keep_parts:
            _remove_parts(out_dir)
    return report


def _shard_key(sh) -> dict:
    return {"shard": f"{sh[0]}/{sh[1]}"} if sh else {}


def _up_to_date(out_dir: Path, files: dict, jobs, fps: dict, pcfg) -> dict | None:
    """The report of the committed store at ``out_dir`` when it holds exactly what these inputs would
    give (the same store fingerprint), else None. A shard knows only its own studies' fingerprints:
    the others are computed (a stat of their files) only when there is a committed store to compare."""
    if not (out_dir / REPORT_FILE).is_file():
        return None
    every = [fps.get(j.study_id) or study_fingerprint(j, pcfg) for j in jobs]
    return committed_report(out_dir, _fingerprint(files, every))


def _remove_parts(out_dir: Path) -> None:
    try:
        remove_parts(out_dir)
    except OSError as e:  # the store is committed: nothing is lost, the folder only takes space
        warnings.warn(f"{out_dir}: the store is complete, but its parts could not be deleted ({e}); "
                      f"delete {parts_dir(out_dir)} by hand, or rerun to try again")


def _stack_report(parts, plan_notes: list) -> dict:
    """How the series split into stacks: counts, the split series, and every note (a coordinate row
    read once, a slice dropped or a repeated position collapsed: recorded, but no sample was lost to it)."""
    series = [r for p in parts for r in p.series]
    split = [r for r in series if r["stacks"] > 1]
    notes = list(plan_notes) + [n for p in parts for n in p.notes]
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
