"""`lsdc profile STORE --view V [--backend B] [--steps N] [--json FILE] [--out DIR] [--key=value ...]`

Runs the REAL training step (``lsdc.train.loop.train_step``, the function the trainer calls) on
batches from the real loader (fold 0's training rows) and splits each step's wall time into waiting
for the loader (data) and the step itself (compute, device-synchronised). Prints loader vs compute
time and the data-wait share, writes a torch.profiler Chrome trace (open in chrome://tracing or
Perfetto) to DIR/trace.json, and with --json the figures as one object.

``lsdc bench step`` times the same step on in-memory batches: loader cost ~= profile - bench step.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..core.config import BACKENDS, Config, load_config
from ..core.schema import VIEWS
from ..preprocess.store import read_index
from ..core.cli import accept_overrides
from ..train.folds import split_rows
from ..train.loop import with_store_spec
from ..train.step import build_step, resolve_device, train_step
from .timing import table, write_json


def _batches(loader):
    """Batches forever, epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _timed_step(s, batches) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    batch = next(batches)
    t1 = time.perf_counter()
    train_step(s, batch)["loss"].item()
    if s.device.type == "cuda":
        torch.cuda.synchronize()
    return t1 - t0, time.perf_counter() - t1, len(batch["label"])


def profile(cfg: Config, store, view: str, steps: int = 20, warmup: int = 3, trace_steps: int = 5,
            out_dir=None, fold: int = 0) -> dict:
    """Time ``steps`` real training steps after ``warmup``; then trace ``trace_steps`` more."""
    from ..loaders.factory import create_loader

    cfg = with_store_spec(cfg, store)
    device = torch.device(resolve_device(cfg.train))
    torch.manual_seed(cfg.train.seed)
    rows, _ = split_rows(read_index(store, view), cfg.train.folds, cfg.train.seed, fold)
    loader = create_loader(cfg, store, view, rows, train=True)
    s = build_step(cfg, view, steps_per_epoch=max(1, len(loader)), device=device)
    s.model.train()
    batches = _batches(loader)
    for _ in range(warmup):
        _timed_step(s, batches)
    data, compute, n = [], [], 0
    for _ in range(steps):
        d, c, b = _timed_step(s, batches)
        data.append(d)
        compute.append(c)
        n += b
    out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="lsdc_profile_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(trace_steps):
            with torch.profiler.record_function("data_wait"):
                batch = next(batches)
            with torch.profiler.record_function("train_step"):
                train_step(s, batch)["loss"].item()
            prof.step()
    trace = out_dir / "trace.json"
    prof.export_chrome_trace(str(trace))
    total = sum(data) + sum(compute)
    return {"backend": getattr(loader, "backend", type(loader).__name__), "device": str(device), "view": view,
            "batch_size": cfg.train.batch_size, "steps": steps, "warmup": warmup,
            "data_s_per_step": sum(data) / steps, "compute_s_per_step": sum(compute) / steps,
            "data_s_median": statistics.median(data), "compute_s_median": statistics.median(compute),
            "data_wait_share": sum(data) / total, "samples_per_s": n / total, "trace": str(trace)}


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("store", help="the store written by `lsdc preprocess`")
    p.add_argument("--view", required=True, choices=VIEWS)
    p.add_argument("--backend", default=None, choices=BACKENDS, help="loader backend (default: the config's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--trace-steps", type=int, default=5, help="steps recorded by torch.profiler")
    p.add_argument("--out", default=None, help="folder for trace.json (default: a new temporary folder)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON")
    p.add_argument("--config", default=None, help="YAML config file")
    accept_overrides(p)


def run(args) -> int:
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
