"""The training step alone on fixed in-memory batches: :func:`bench_step` (the `lsdc bench step` verb:
lsdc.benchmarks.cli, whose docstring gives the batch shape); loader cost ~= profile - bench step.
"""
from __future__ import annotations

import statistics
import time

import torch

from ..core.config import Config
from ..core.schema import SAG_T2
from ..train.device import resolve_device
from ..train.loop import with_store_spec
from ..train.step import build_step, train_step


def synthetic_batch(cfg: Config, view: str, seed: int = 0) -> dict:
    """A batch of the loader's layout with random pixels and labels (every class present)."""
    spec = cfg.preprocess.spec(view)
    b = cfg.train.batch_size
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(b, spec.slices, cfg.loader.channels, spec.out_px, spec.out_px, generator=g),
            "label": torch.arange(b) % 3, "level": torch.arange(b) % 5, "side": torch.arange(b) % 2,
            "row": torch.arange(b), "study_id": torch.arange(b) // 5}


def bench_step(cfg: Config, view: str = SAG_T2, steps: int = 20, warmup: int = 3, store=None) -> dict:
    if store is not None:
        cfg = with_store_spec(cfg, store)
    device = torch.device(resolve_device(cfg.train.device))
    torch.manual_seed(cfg.train.seed)
    s = build_step(cfg, view, steps_per_epoch=steps + warmup, device=device)
    s.model.train()
    batch = synthetic_batch(cfg, view)
    secs = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        train_step(s, batch)["loss"].item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            secs.append(time.perf_counter() - t)
    med = statistics.median(secs)
    spec = cfg.preprocess.spec(view)
    return {"device": str(device), "view": view, "backbone": cfg.model.backbone,
            "shape": [cfg.train.batch_size, spec.slices, cfg.loader.channels, spec.out_px, spec.out_px],
            "steps": steps, "warmup": warmup, "step_s_median": med, "step_s_min": min(secs),
            "step_s_max": max(secs), "samples_per_s": cfg.train.batch_size / med}
