"""`lsdc bench convert|loader|step` (throughput benchmarks: warm-up, medians, a table, --json FILE),
`lsdc bench quality` (model skill over several synthetic datasets) and `lsdc profile`: the command
lines of the benchmark modules, which hold the measuring code only.

Each benchmark has ``configure_<name>(parser)`` and ``run_<name>(args) -> int`` here; ``configure`` and
``run`` are the `lsdc bench` verb, which dispatches to them.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ..core.config import BACKENDS
from ..core.errors import InputError
from ..core.overrides import accept_overrides, load_config
from ..core.schema import SAG_T2, VIEWS
from .loader_bench import LOADER_BACKENDS, LoaderBenchOptions
from .timing import table, write_json

PROFILE_HELP = """\
`lsdc profile STORE --view V [--backend B] [--steps N] [--json FILE] [--out DIR] [--key=value ...]`

Runs the REAL training step (``lsdc.train.loop.train_step``, the function the trainer calls) on
batches from the real loader (fold 0's training rows) and splits each step's wall time into waiting
for the loader (data) and the step itself (compute, device-synchronised). Prints loader vs compute
time and the data-wait share, writes a torch.profiler Chrome trace (open in chrome://tracing or
Perfetto) to DIR/trace.json, and with --json the figures as one object.

``lsdc bench step`` times the same step on in-memory batches: loader cost ~= profile - bench step.
"""

STEP_HELP = """\
`lsdc bench step [--store STORE] [--view V] [--steps N] [--json FILE] [--key=value ...]`

The training step alone: ``lsdc.train.loop.train_step`` (the very function the trainer calls) on
fixed in-memory batches, so no loader cost. Batch shape (B, S, C, H, W) = (train.batch_size, slices,
loader.channels, out_px, out_px) from the store's crop spec with --store, else from the config.
Warm-up steps, then the median step time (device-synchronised); loader cost ~= profile - bench step.
"""

LOADER_HELP = """\
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

#: the config sections a training-step benchmark reads
STEP_SECTIONS = ("train", "model", "loader")
SHOW_UNREADABLE = 20  # `bench convert` lists this many unreadable files; its --json lists them all


# -- lsdc profile --------------------------------------------------------------------------------
def configure_profile(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = PROFILE_HELP
    p.add_argument("store", help="the store written by `lsdc preprocess`")
    p.add_argument("--view", required=True, choices=VIEWS)
    p.add_argument("--backend", default=None, choices=BACKENDS, help="loader backend (default: the config's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--trace-steps", type=int, default=5, help="steps recorded by torch.profiler")
    p.add_argument("--out", default=None, help="folder for trace.json (default: a new temporary folder)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON")
    p.add_argument("--config", default=None, help="YAML config file")
    accept_overrides(p, STEP_SECTIONS)


def run_profile(args) -> int:
    from .profile import profile
    overrides = list(args.overrides) + ([f"--loader.backend={args.backend}"] if args.backend else [])
    cfg = load_config(args.config, overrides)
    res = profile(cfg, args.store, args.view, max(1, args.steps), max(0, args.warmup), max(1, args.trace_steps),
                  args.out)
    row = {"backend": res["backend"], "device": res["device"], "data ms/step": 1e3 * res["data_s_per_step"],
           "compute ms/step": 1e3 * res["compute_s_per_step"], "data wait %": 100 * res["data_wait_share"],
           "samples/s": res["samples_per_s"]}
    print(table([row], list(row)))
    print(f"trace: {res['trace']}")
    write_json(args.json, res)
    return 0


# -- lsdc bench step -----------------------------------------------------------------------------
def configure_step(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = STEP_HELP
    p.add_argument("--store", default=None, help="take the crop spec (slices, out_px) from this store")
    p.add_argument("--view", default=SAG_T2, choices=VIEWS)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON")
    p.add_argument("--config", default=None, help="YAML config file")
    accept_overrides(p, STEP_SECTIONS + ("preprocess",))


def run_step(args) -> int:
    from .step_bench import bench_step
    cfg = load_config(args.config, args.overrides)
    res = bench_step(cfg, args.view, max(1, args.steps), max(0, args.warmup), args.store)
    row = {"device": res["device"], "backbone": res["backbone"], "batch (B,S,C,H,W)": "x".join(map(str, res["shape"])),
           "ms/step (median)": 1e3 * res["step_s_median"], "samples/s": res["samples_per_s"]}
    print(table([row], list(row)))
    write_json(args.json, res)
    return 0


# -- lsdc bench loader ---------------------------------------------------------------------------
def configure_loader(p: argparse.ArgumentParser) -> None:
    d = LoaderBenchOptions()
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = LOADER_HELP
    p.add_argument("--data", default=None, help="competition-format folder (DICOMs; enables the dicom row)")
    p.add_argument("--store", default=None, help="an existing store (else --data, or synthetic data, is converted)")
    p.add_argument("--view", default=d.view, choices=VIEWS)
    p.add_argument("--backend", nargs="+", default=list(d.backend), choices=LOADER_BACKENDS)
    p.add_argument("--workers", type=int, default=d.workers, help="torch/dicom worker processes, DALI threads")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--studies", type=int, default=d.studies, help="synthetic studies when neither --data nor --store")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--min-samples", type=int, default=d.min_samples, help="samples per timed call (whole epochs)")
    p.add_argument("--dicom-samples", type=int, default=d.dicom_samples,
                   help="samples per timed call of the dicom baseline")
    p.add_argument("--json", default=None, metavar="FILE", help="write the rows as a JSON list")
    p.add_argument("--config", default=None, help="YAML config file")
    accept_overrides(p, ("loader", "preprocess"))


def run_loader(args) -> int:
    from .loader_bench import COLUMNS, bench, summary
    t0 = time.perf_counter()
    opts = LoaderBenchOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LoaderBenchOptions)})
    rows = bench(opts, load_config(args.config, args.overrides))
    print()
    print(table(rows, COLUMNS))
    for line in summary(rows):
        print(line)
    print(f"({time.perf_counter() - t0:.0f} s)")
    write_json(args.json, rows)
    return 0


# -- lsdc bench convert --------------------------------------------------------------------------
def configure_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="competition-format folder (default: synthesise one)")
    p.add_argument("--studies", type=int, default=16, help="studies to synthesise without --data")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="pool size of the parallel run (default all cores)")
    p.add_argument("--json", default=None, metavar="FILE")


def run_convert(args) -> int:
    from .convert_bench import bench_convert
    res = bench_convert(args.data, args.studies, args.repeats, args.workers)
    w = res["workers"]
    print(table([
        {"processes": 1, "pydicom read+decode slices/s": res["pydicom_read_slices_per_s"],
         "converter slices/s": res["converter_slices_per_s"], "converter / pydicom": f"{res['converter_vs_pydicom']:.2f}"},
        {"processes": w, "pydicom read+decode slices/s": res["pydicom_read_parallel_slices_per_s"],
         "converter slices/s": res["converter_parallel_slices_per_s"],
         "converter / pydicom": f"{res['converter_parallel_vs_pydicom_parallel']:.2f}"},
    ], ["processes", "pydicom read+decode slices/s", "converter slices/s", "converter / pydicom"]))
    print(f"({res['slices']} slices; converter = the whole `lsdc preprocess`, plan to assembled store)")
    if res["unreadable"]:
        shown = res["unreadable"][:SHOW_UNREADABLE]
        print(f"{res['unreadable_count']} unreadable file(s) left out of both sides:")
        print(table([{"file": r["path"], "reason": r["reason"], "error": r["detail"][:80]} for r in shown],
                    ["file", "reason", "error"]))
        if res["unreadable_count"] > len(shown):
            print(f"... and {res['unreadable_count'] - len(shown)} more (all of them in --json)")
    print(table([{"kernel": k, "numba ms": v["numba_s"] * 1e3, "numpy ms": v["numpy_s"] * 1e3,
                  "speedup": v["speedup"]} for k, v in res["kernels"].items()],
                ["kernel", "numba ms", "numpy ms", "speedup"]))
    print(f"peak RSS (MB) by studies converted: {res['peak_rss_mb_by_studies']}")
    write_json(args.json, res)
    return 0


# -- lsdc bench quality --------------------------------------------------------------------------
def configure_quality(p: argparse.ArgumentParser) -> None:
    from .quality import BASES, QUALITY_SEED_BASE, QualityOptions, __doc__ as doc
    d = QualityOptions(out="")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = doc
    p.epilog = ("example: lsdc bench quality --out Q --seeds 5 --recipe demo "
                "--recipe 'aug=--augment=true'  (the demo's recipe against it with augmentation on)")
    p.add_argument("--out", required=True, help="cache and results folder (datasets, stores, runs, quality.json)")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME[=SPEC]",
                   help="NAME, NAME=FILE.yaml (a whole config) or NAME='--key=value ...' (overrides on top of "
                        "--base); repeat to compare (each against the first); default: one recipe 'demo'")
    p.add_argument("--base", default="demo", choices=BASES, help="what override recipes start from")
    p.add_argument("--seeds", type=int, default=d.seeds, help="datasets (seeds from %d on)" % QUALITY_SEED_BASE)
    p.add_argument("--seed-offset", type=int, default=d.seed_offset, help="skip this many seeds of the range")
    p.add_argument("--train", type=int, default=d.train_studies, dest="train_studies", help="train studies per dataset")
    p.add_argument("--test", type=int, default=d.test_studies, dest="test_studies", help="test studies per dataset")
    p.add_argument("--fold", default=str(d.fold), help="the fold each view trains (of train.folds), or 'all'")
    p.add_argument("--views", nargs="+", default=list(VIEWS), choices=VIEWS,
                   help="train only these views (the others' cells take the prior; read their terms)")
    p.add_argument("--localizer", action="store_true", help="also score at a trained localiser's points")
    p.add_argument("--workers", type=int, default=None, help="synth/preprocess processes (default all cores)")
    p.add_argument("--json", default=None, metavar="FILE", help="results JSON (default OUT/quality.json)")


def run_quality(args) -> int:
    from .quality import QualityOptions, bench_quality, pair_rows, parse_recipe, summary_rows
    if args.seeds < 1 or args.seed_offset < 0 or args.train_studies < 2 or args.test_studies < 1:
        raise InputError("need --seeds >= 1, --seed-offset >= 0, --train >= 2 and --test >= 1")
    if not (args.fold == "all" or args.fold.isdigit()):
        raise InputError(f"--fold {args.fold!r}: a fold number or 'all'")
    recipes = [parse_recipe(t, args.base) for t in (args.recipe or ["demo"])]
    fold = args.fold if args.fold == "all" else int(args.fold)
    opts = QualityOptions(args.out, args.seeds, args.seed_offset, args.train_studies, args.test_studies, fold,
                          args.localizer, args.workers, tuple(v for v in VIEWS if v in args.views))
    t0 = time.perf_counter()
    res = bench_quality(recipes, opts)
    rows = summary_rows(res)
    print()
    print(table(rows, list(rows[0])))
    pairs = pair_rows(res)
    if pairs:
        print()
        print(table(pairs, list(pairs[0])))
    print(f"({len(opts.seed_list)} seeds x {len(recipes)} recipes, {opts.train_studies} train / "
          f"{opts.test_studies} test studies; {time.perf_counter() - t0:.0f} s)")
    write_json(args.json or str(Path(args.out) / "quality.json"), res)
    return 0


# -- lsdc bench: the dispatcher ------------------------------------------------------------------
BENCHES = {
    "convert": (configure_convert, run_convert,
                "converter slices/s vs raw pydicom reads, Numba vs NumPy kernels, peak RSS"),
    "loader": (configure_loader, run_loader,
               "samples/s: decode bound, raw store reads, dali/torch backends, DICOM baseline"),
    "step": (configure_step, run_step, "the training step alone on in-memory batches (model compute)"),
    "quality": (configure_quality, run_quality,
                "skill mean ± sd over synthetic datasets of several seeds; recipes compared pairwise"),
}


def configure(p) -> None:
    sub = p.add_subparsers(dest="bench", metavar="BENCH")
    sub.required = True
    for name, (configure_bench, run_bench, help_) in BENCHES.items():
        q = sub.add_parser(name, help=help_, description=help_)
        configure_bench(q)
        q.set_defaults(_bench_run=run_bench)


def run(args) -> int:
    return args._bench_run(args)
