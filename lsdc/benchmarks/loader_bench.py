"""`lsdc bench loader [--data DIR] [--store STORE] [--backend B ...] [--workers N] [--json FILE]`

Samples/s of every way to get training batches, on the same store (and source DICOMs) in one run:

  decode  the codec alone: Blosc-decompress the view's chunk bytes, preloaded in memory (1 core)
  store   lsdc's reader: chunk files -> shuffle buffer -> uint8 batches of the model's slices (1 core)
  zarr    zarr-python whole-chunk reads in a shuffled chunk order, for reference (1 core)
  dali    the DALI backend (CPU-only mode without a GPU), with and without augmentation
  torch   the PyTorch DataLoader backend, with and without augmentation
  dicom   the seed-style baseline: pydicom reads of every slice per sample (needs the DICOMs), on
          1 core (the figure the store row is compared with) and with --workers processes

Without --store it converts --data (or, without --data, a small synthetic dataset) into a temporary
store first. Each figure is the median of --repeats timed calls after a warm-up call. The decode, store
and zarr calls are timed in turns (they are compared with each other). samples_per_cpu_s divides by
this process's CPU time instead (blank when worker processes do the work): on a host shared with other
jobs it shows what the wall-clock figure would be on an idle core; load_1min records that load.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.config import Config, load_config
from ..core.errors import InputError
from ..core.schema import SAG_T2, VIEWS
from .timing import cpu_s as _cpu_s, interleaved_rates, median_rate, table, write_json

LOADER_BACKENDS = ("dali", "torch", "dicom")
COLUMNS = ["backend", "augment", "workers", "samples_per_s", "samples_per_cpu_s", "load_1min", "note"]


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


def _prepare(args, cfg: Config) -> tuple[Path, Path | None, tempfile.TemporaryDirectory | None]:
    """(store, data_dir, temp dir to clean up)."""
    if args.store:
        return Path(args.store), Path(args.data) if args.data else None, None
    from ..preprocess.convert import preprocess
    tmp = tempfile.TemporaryDirectory(prefix="lsdc_bench_loader_")
    data = Path(args.data) if args.data else Path(tmp.name) / "data"
    if not args.data:
        from ..synth.generate import synth
        print(f"synthesising {args.studies} studies into {data} ...", flush=True)
        synth(data, studies=args.studies, seed=args.seed)
    store = Path(tmp.name) / "store"
    print(f"converting {data} into {store} ...", flush=True)
    preprocess(data, store, workers=args.workers or 1, cfg=cfg, progress=False)
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
    from ..preprocess.store import crops_array
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
    in_process = getattr(loader, "workers", 0) == 0 or getattr(loader, "backend", "") == "dali"
    return wall, (n / max(1e-9, statistics.median(cpu_s[1:])) if in_process else None)


def bench(args) -> list[dict]:
    from ..loaders.factory import create_loader, dali_available
    from ..loaders.batching import EpochPlan
    from ..loaders.reader import open_view
    from ..preprocess.store import store_preprocess_config

    cfg = load_config(args.config, args.overrides)
    store, data_dir, tmp = _prepare(args, cfg)
    try:
        cfg = dataclasses.replace(cfg, preprocess=store_preprocess_config(store))
        spec = cfg.preprocess.spec(args.view)
        reader, meta = open_view(store, args.view)
        if not len(reader):
            raise InputError(f"{store}: the {args.view} view has no samples")
        cfg.train.batch_size, cfg.loader.workers = args.batch_size, args.workers
        print(f"store {store}: {args.view} {len(reader)} samples of {reader.sample_shape} uint8, "
              f"{reader.n_chunks} chunks of {reader.chunk}; model input {spec.slices} x {spec.out_px} px", flush=True)
        rows: list[dict] = []

        def add(backend, augment, workers, rate, note="", cpu_rate=None):
            rows.append({"backend": backend, "augment": augment, "workers": workers, "samples_per_s": float(rate),
                         "samples_per_cpu_s": float(cpu_rate) if cpu_rate else "",
                         "load_1min": round(os.getloadavg()[0], 2), "note": note})  # other work on the host
            print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)

        def dicom(workers):
            cfg.loader.backend, cfg.loader.workers = "dicom", workers
            loader = create_loader(cfg, store, args.view, None, train=True, data_dir=data_dir)
            steps = max(1, args.dicom_samples // args.batch_size)
            wall, cpu = bench_loader(loader, args.repeats, args.dicom_samples, max_steps=steps)
            add("dicom", False, workers, wall, "pydicom per sample" + (", 1 core" if not workers else ""), cpu)

        with one_core():
            plan = EpochPlan.create(reader, meta, None, spec, dataclasses.replace(cfg.loader, augment=False),
                                    args.batch_size, args.seed, train=True)
            r = interleaved_rates({"decode": decode_call(reader, args.min_samples),
                                   "store": store_call(plan, args.min_samples),
                                   "zarr": zarr_call(store, args.view, args.min_samples)}, args.repeats)
            add("decode", False, 1, *r["decode"][:1], "Blosc alone, bytes in memory, 1 core", r["decode"][1])
            add("store", False, 1, *r["store"][:1], "reader + shuffle buffer, 1 core", r["store"][1])
            add("zarr", False, 1, *r["zarr"][:1], "zarr-python whole chunks, 1 core", r["zarr"][1])
            if "dicom" in args.backend and data_dir is not None:
                dicom(0)
        for backend in args.backend:
            if backend == "dali" and not dali_available()[0]:
                print(f"skipping dali: {dali_available()[1]}")
                continue
            if backend == "dicom":
                if data_dir is None:
                    print("skipping dicom: the baseline needs --data (the DICOMs the store came from)")
                elif args.workers:
                    dicom(args.workers)
                continue
            for augment in (False, True):
                cfg.loader.backend, cfg.loader.augment, cfg.loader.workers = backend, augment, args.workers
                loader = create_loader(cfg, store, args.view, None, train=True)
                wall, cpu = bench_loader(loader, args.repeats, args.min_samples)
                add(backend, augment, args.workers, wall,
                    {"cpu": "DALI CPU-only mode", "gpu": "DALI on the GPU"}.get(getattr(loader, "device", ""), ""),
                    cpu)
                if hasattr(loader, "close"):
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


def configure(p) -> None:
    import argparse
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("\n\n", 1)[1]
    p.add_argument("--data", default=None, help="competition-format folder (DICOMs; enables the dicom row)")
    p.add_argument("--store", default=None, help="an existing store (else --data, or synthetic data, is converted)")
    p.add_argument("--view", default=SAG_T2, choices=VIEWS)
    p.add_argument("--backend", nargs="+", default=list(LOADER_BACKENDS), choices=LOADER_BACKENDS)
    p.add_argument("--workers", type=int, default=2, help="torch/dicom worker processes, DALI threads")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--studies", type=int, default=24, help="synthetic studies when neither --data nor --store")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-samples", type=int, default=1000, help="samples per timed call (whole epochs)")
    p.add_argument("--dicom-samples", type=int, default=96, help="samples per timed call of the dicom baseline")
    p.add_argument("--json", default=None, metavar="FILE", help="write the rows as a JSON list")
    p.add_argument("--config", default=None, help="YAML config file")
    from ..core.cli import accept_overrides
    accept_overrides(p)


def run(args) -> int:
    t0 = time.perf_counter()
    rows = bench(args)
    print()
    print(table(rows, COLUMNS))
    for line in summary(rows):
        print(line)
    print(f"({time.perf_counter() - t0:.0f} s)")
    write_json(args.json, rows)
    return 0
