"""`lsdc bench step [--store STORE] [--view V] [--steps N] [--json FILE] [--key=value ...]`

The training step alone: ``lsdc.train.loop.train_step`` (the very function the trainer calls) on
fixed in-memory batches, so no loader cost. Batch shape (B, S, C, H, W) = (train.batch_size, slices,
loader.channels, out_px, out_px) from the store's crop spec with --store, else from the config.
Warm-up steps, then the median step time (device-synchronised); loader cost ~= profile - bench step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ..core.config import Config, load_config
from ..core.schema import SAG_T2, VIEWS
from ..core.cli import accept_overrides
from ..train.loop import with_store_spec
from ..train.step import build_step, resolve_device, train_step
from .timing import table, write_json


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
    device = torch.device(resolve_device(cfg.train))
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


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("--store", default=None, help="take the crop spec (slices, out_px) from this store")
    p.add_argument("--view", default=SAG_T2, choices=VIEWS)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON")
    p.add_argument("--config", default=None, help="YAML config file")
    accept_overrides(p)


def run(args) -> int:
    cfg = load_config(args.config, args.overrides)
    res = bench_step(cfg, args.view, max(1, args.steps), max(0, args.warmup), args.store)
    row = {"device": res["device"], "backbone": res["backbone"], "batch (B,S,C,H,W)": "x".join(map(str, res["shape"])),
           "ms/step (median)": 1e3 * res["step_s_median"], "samples/s": res["samples_per_s"]}
    print(table([row], list(row)))
    write_json(args.json, res)
    return 0
