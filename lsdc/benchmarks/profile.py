"""Loader time vs compute time of the real training step: :func:`profile` (the `lsdc profile` verb:
lsdc.benchmarks.cli, whose docstring says what it prints).

Runs ``lsdc.train.loop.train_step`` (the function the trainer calls) on batches from the real loader
and splits each step's wall time into waiting for the loader and the step itself; then records a
torch.profiler Chrome trace of a few more steps.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..core.config import Config
from ..store.reader import read_index
from ..train.device import resolve_device
from ..train.folds import split_rows
from ..train.loop import with_store_spec
from ..train.step import build_step, train_step


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
    device = torch.device(resolve_device(cfg.train.device))
    torch.manual_seed(cfg.train.seed)
    rows, _ = split_rows(read_index(store, view), cfg.train.folds, cfg.train.seed, fold)
    with create_loader(cfg, store, view, rows, train=True) as loader:
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
    return {"backend": loader.backend, "device": str(device), "view": view,
            "batch_size": cfg.train.batch_size, "steps": steps, "warmup": warmup,
            "data_s_per_step": sum(data) / steps, "compute_s_per_step": sum(compute) / steps,
            "data_s_median": statistics.median(data), "compute_s_median": statistics.median(compute),
            "data_wait_share": sum(data) / total, "samples_per_s": n / total, "trace": str(trace)}
