"""Loader time vs compute time of the real training step: :func:`profile` (the `lsdc profile` verb:
lsdc.benchmarks.cli, whose docstring says what it prints).

Runs ``lsdc.train.loop.train_step`` (the function the trainer calls) on batches from the real loader
and splits each step's wall time into waiting for the loader and the step itself; then records a
torch.profiler Chrome trace of a few more steps.

torch.profiler's C++ side (kineto) writes log lines straight to file descriptor 2 that are not about
this run: ``USDT: ... profiler_start`` / ``profiler_stop`` (probe markers, logged at a level above
ERROR) and, in a CUDA build on a host without a usable GPU, ``ERROR: ... gpuGetDeviceCount failed with
code 35``: kineto asks the CUDA runtime for device properties to stamp every trace, even one that
records only CPU activity (no activity choice or experimental_config avoids the call). The only
setting that hides them, ``KINETO_LOG_LEVEL`` above ERROR, would hide every kineto error as well, so
:func:`kineto_noise_filtered` drops exactly those lines instead (the GPU one only where torch sees no
CUDA device, where it is expected) and writes every other line back: a real kineto error still shows.
"""
from __future__ import annotations

import contextlib
import os
import re
import statistics
import sys
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


#: kineto's probe markers, printed at every profiler start and stop
KINETO_PROBE_LINE = re.compile(rb"^USDT:.*\] profiler_(start|stop)$")
#: kineto failing to list CUDA devices: expected (and harmless) only where torch sees no CUDA device
KINETO_NO_GPU_LINE = re.compile(rb"^ERROR:.*\] gpuGetDeviceCount failed with code \d+$")
_STDERR_FD = 2


def is_kineto_noise(line: bytes, cuda_available: bool) -> bool:
    """Whether a line kineto wrote is one of the two it writes for no reason of ours (module docstring)."""
    line = line.rstrip(b"\r\n")
    return bool(KINETO_PROBE_LINE.match(line) or (not cuda_available and KINETO_NO_GPU_LINE.match(line)))


@contextlib.contextmanager
def kineto_noise_filtered():
    """File descriptor 2 (where kineto's C++ logger writes) goes to a temporary file inside the block;
    afterwards every line but kineto's noise (:func:`is_kineto_noise`) is written back to it."""
    cuda_available = torch.cuda.is_available()
    sys.stderr.flush()
    saved = os.dup(_STDERR_FD)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), _STDERR_FD)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, _STDERR_FD)
            os.close(saved)
            captured.seek(0)
            kept = [ln for ln in captured.read().splitlines(keepends=True) if not is_kineto_noise(ln, cuda_available)]
            if kept:
                os.write(_STDERR_FD, b"".join(kept))


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
        with kineto_noise_filtered(), torch.profiler.profile(activities=activities) as prof:
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
