"""Samples/s of every way to get training batches, on the same store (and source DICOMs) in one run:
:func:`bench` (the `lsdc bench loader` verb: lsdc.benchmarks.cli, whose help describes each row).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import Config
from ..core.errors import InputError
from ..core.schema import SAG_T2
from .timing import cpu_s as _cpu_s
from .timing import interleaved_rates, median_rate, table

LOADER_BACKENDS = ("dali", "torch", "dicom")
COLUMNS = ["backend", "augment", "workers", "samples_per_s", "samples_per_cpu_s", "load_1min", "note"]


@dataclass
class LoaderBenchOptions:
    """What :func:`bench` measures and how long: the flags of `lsdc bench loader` (same names, same
    defaults; their help says what each one means)."""

    data: str | None = None
    store: str | None = None
    view: str = SAG_T2
    backend: tuple = LOADER_BACKENDS
    workers: int = 2
    batch_size: int = 12
    studies: int = 24
    seed: int = 0
    repeats: int = 5
    min_samples: int = 1000
    dicom_samples: int = 96


@contextlib.contextmanager
def one_core():
    """Pin the calling thread, Blosc and torch's intra-op pool to one core for the single-core rows."""
    import numcodecs.blosc as blosc
    import torch
    old_aff = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    old_blosc, old_torch = blosc.set_nthreads(1), torch.get_num_threads()
    torch.set_num_threads(1)
    if old_aff:
        os.sched_setaffinity(0, {min(old_aff)})
    try:
        yield
    finally:
        if old_aff:
            os.sched_setaffinity(0, old_aff)
        blosc.set_nthreads(old_blosc)
        torch.set_num_threads(old_torch)


def _prepare(opts: LoaderBenchOptions, cfg: Config) -> tuple[Path, Path | None, tempfile.TemporaryDirectory | None]:
    """(store, data_dir, temp dir to clean up)."""
    if opts.store:
        return Path(opts.store), Path(opts.data) if opts.data else None, None
    from ..preprocess.convert import preprocess
    tmp = tempfile.TemporaryDirectory(prefix="lsdc_bench_loader_")
    data = Path(opts.data) if opts.data else Path(tmp.name) / "data"
    if not opts.data:
        from ..synth.generate import synth
        print(f"synthesising {opts.studies} studies into {data} ...", flush=True)
        synth(data, studies=opts.studies, seed=opts.seed)
    store = Path(tmp.name) / "store"
    print(f"converting {data} into {store} ...", flush=True)
    preprocess(data, store, workers=opts.workers or 1, cfg=cfg, progress=False)
    return store, data, tmp


def decode_call(reader, min_samples: int):
    """Blosc-decompress every chunk of the view from bytes preloaded in memory. Counted per real sample,
    like the store row, which decodes the same chunks (zarr pads the last one; zeros decode fast)."""
    from numcodecs.blosc import decompress
    blobs = [reader.chunk_path(ci).read_bytes() for ci in range(reader.n_chunks)]
    out = np.empty(reader.chunk_shape, np.uint8)
    epochs = max(1, -(-min_samples // len(reader)))

    def run():
        for _ in range(epochs):
            for b in blobs:
                decompress(b, out)
    return run, epochs * len(reader)


def store_call(plan, min_samples: int):
    """Whole shuffled epochs of uint8 batches through the reader (no augmentation)."""
    epochs = max(1, -(-min_samples // plan.num_samples))
    state = {"epoch": 0}

    def run():
        for _ in range(epochs):
            for _ in plan.batches(state["epoch"], ring=2):  # as the backends consume them
                pass
            state["epoch"] += 1
    return run, epochs * plan.num_samples


def zarr_call(store, view: str, min_samples: int):
    """zarr-python whole-chunk reads in a shuffled chunk order."""
    from ..store.reader import crops_array
    arr = crops_array(store, view)
    chunk = arr.chunks[0]
    n_chunks = -(-arr.shape[0] // chunk)
    epochs = max(1, -(-min_samples // arr.shape[0]))
    rng = np.random.default_rng(0)

    def run():
        for _ in range(epochs):
            for ci in rng.permutation(n_chunks):
                arr[ci * chunk:(ci + 1) * chunk]
    return run, epochs * arr.shape[0]


def bench_loader(loader, repeats: int, min_samples: int, max_steps: int | None = None) -> tuple:
    """(samples per wall second, samples per CPU second of this process or None when worker processes
    do the work) of whole epochs (or ``max_steps`` steps) through ``loader``."""
    steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    samples_per_epoch = loader.num_samples if steps == len(loader) else steps * loader.plan.batch_size
    epochs = max(1, -(-min_samples // samples_per_epoch))
    state = {"epoch": 0}

    def run():
        for _ in range(epochs):
            loader.set_epoch(state["epoch"])
            state["epoch"] += 1
            it = iter(loader)
            for _ in range(steps):
                next(it)["image"].sum().item()  # touch the output, as a training step would
            if steps == len(loader):
                for _ in it:  # let the backend see the end of the epoch
                    pass
    cpu_s = []

    def timed():
        c = _cpu_s()
        run()
        cpu_s.append(_cpu_s() - c)
    n = epochs * samples_per_epoch
    wall = median_rate(timed, n, repeats=repeats, warmup=1)["per_s"]
    in_process = getattr(loader, "workers", 0) == 0 or loader.backend == "dali"
    return wall, (n / max(1e-9, statistics.median(cpu_s[1:])) if in_process else None)


def bench(opts: LoaderBenchOptions, cfg: Config) -> list[dict]:
    """One row per figure (printed as it is measured), see LoaderBenchOptions; ``cfg`` gives the loader
    settings and, when a store is converted first, the preprocess ones."""
    from ..loaders.batching import EpochPlan
    from ..loaders.factory import create_loader, dali_available
    from .dicom_baseline import create_dicom_loader
    from ..store.reader import open_view, store_preprocess_config

    store, data_dir, tmp = _prepare(opts, cfg)
    try:
        cfg = dataclasses.replace(cfg, preprocess=store_preprocess_config(store))
        spec = cfg.preprocess.spec(opts.view)
        reader, meta = open_view(store, opts.view)
        if not len(reader):
            raise InputError(f"{store}: the {opts.view} view has no samples")
        cfg.train.batch_size, cfg.loader.workers = opts.batch_size, opts.workers
        print(f"store {store}: {opts.view} {len(reader)} samples of {reader.sample_shape} uint8, "
              f"{reader.n_chunks} chunks of {reader.chunk}; model input {spec.slices} x {spec.out_px} px", flush=True)
        rows: list[dict] = []

        def add(backend, augment, workers, rate, note="", cpu_rate=None):
            rows.append({"backend": backend, "augment": augment, "workers": workers, "samples_per_s": float(rate),
                         "samples_per_cpu_s": float(cpu_rate) if cpu_rate else "",
                         "load_1min": round(os.getloadavg()[0], 2), "note": note})  # other work on the host
            print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)

        def dicom(workers):
            cfg.loader.workers = workers
            loader = create_dicom_loader(cfg, store, opts.view, data_dir)
            steps = max(1, opts.dicom_samples // opts.batch_size)
            wall, cpu = bench_loader(loader, opts.repeats, opts.dicom_samples, max_steps=steps)
            add("dicom", False, workers, wall, "pydicom per sample" + (", 1 core" if not workers else ""), cpu)

        with one_core():
            plan = EpochPlan.create(reader, meta, None, spec, dataclasses.replace(cfg.loader, augment=False),
                                    opts.batch_size, opts.seed, train=True)
            r = interleaved_rates({"decode": decode_call(reader, opts.min_samples),
                                   "store": store_call(plan, opts.min_samples),
                                   "zarr": zarr_call(store, opts.view, opts.min_samples)}, opts.repeats)
            add("decode", False, 1, *r["decode"][:1], "Blosc alone, bytes in memory, 1 core", r["decode"][1])
            add("store", False, 1, *r["store"][:1], "reader + shuffle buffer, 1 core", r["store"][1])
            add("zarr", False, 1, *r["zarr"][:1], "zarr-python whole chunks, 1 core", r["zarr"][1])
            if "dicom" in opts.backend and data_dir is not None:
                dicom(0)
        for backend in opts.backend:
            if backend == "dali" and not dali_available()[0]:
                print(f"skipping dali: {dali_available()[1]}")
                continue
            if backend == "dicom":
                if data_dir is None:
                    print("skipping dicom: the baseline needs --data (the DICOMs the store came from)")
                elif opts.workers:
                    dicom(opts.workers)
                continue
            for augment in (False, True):
                cfg.loader.backend, cfg.loader.augment, cfg.loader.workers = backend, augment, opts.workers
                loader = create_loader(cfg, store, opts.view, None, train=True)
                wall, cpu = bench_loader(loader, opts.repeats, opts.min_samples)
                add(backend, augment, opts.workers, wall,
                    {"cpu": "DALI CPU-only mode", "gpu": "DALI on the GPU"}.get(getattr(loader, "device", ""), ""),
                    cpu)
                loader.close()
        return rows
    finally:
        if tmp is not None:
            tmp.cleanup()


def summary(rows: list[dict]) -> list[str]:
    by = {(r["backend"], r["augment"]): r["samples_per_s"] for r in rows}
    out = []
    if ("store", False) in by and ("decode", False) in by:
        cpu = {r["backend"]: r["samples_per_cpu_s"] for r in rows if r["samples_per_cpu_s"]}
        out.append(f"store / decode bound = {by['store', False] / by['decode', False]:.0%} per wall second, "
                   f"{cpu['store'] / cpu['decode']:.0%} per CPU second (target >= 50%)")
    one = {r["backend"]: r for r in rows if r["workers"] in (0, 1)}
    if "store" in one and "dicom" in one:
        a, b = one["store"], one["dicom"]
        cpu = (f", {a['samples_per_cpu_s'] / b['samples_per_cpu_s']:,.0f}x per CPU second"
               if a["samples_per_cpu_s"] and b["samples_per_cpu_s"] else "")
        out.append(f"store / dicom baseline, both on 1 core = {a['samples_per_s'] / b['samples_per_s']:,.0f}x "
                   f"per wall second{cpu} (target >= 100x)")
    if ("dali", True) in by:
        out.append(f"dali with augmentation = {by['dali', True]:,.0f} samples/s (target >= 150)")
    return out
