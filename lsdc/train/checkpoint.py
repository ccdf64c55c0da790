"""Checkpoints that resume exactly and load with ``torch.load(weights_only=True)``.

A checkpoint is one dict of tensors and plain Python values (no pickled classes):

    model        state_dict of the bare model (no DDP ``module.`` / compile ``_orig_mod.`` prefix)
    optimizer    AdamW state_dict (param groups keep their "name")
    scheduler    LambdaLR state_dict (the lambda itself is rebuilt from the config)
    scaler       GradScaler state_dict, or None (bf16 and float32 need none)
    rng          one entry per rank: {"python": [...], "numpy": [...], "torch": tensor, "cuda": [tensors]}
    epoch        last finished epoch (0-based); the resumed run starts at epoch + 1
    step         optimizer steps taken so far
    best         {"epoch", "value", "gate_ok"} of the best epoch so far (see loop.is_better)
    bad_epochs   epochs since the best one improved (early-stopping counter)
    config       the resolved Config as a plain dict (Config.to_dict())
    meta         {"view", "fold", "in_chans", "two_sided", "lsdc_checkpoint_version"}

``best.pt`` has the same layout as ``last.pt``; :func:`load_model` rebuilds a model for prediction.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..core.config import Config, config_from_dict
from ..core.errors import InputError
from ..model import create_model

CHECKPOINT_VERSION = 1


def rng_state() -> dict:
    """This process's RNG states as tensors and lists (weights_only-loadable)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def bare(model: torch.nn.Module) -> torch.nn.Module:
    """The model under DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save(path, *, model, optimizer, scheduler, scaler, rng: list, epoch: int, step: int, best: dict,
         bad_epochs: int, cfg: Config, meta: dict) -> None:
    """Write atomically (temporary file + rename): a crash never leaves half a checkpoint."""
    path = Path(path)
    obj = {"model": bare(model).state_dict(), "optimizer": optimizer.state_dict(),
           "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
           "rng": rng, "epoch": int(epoch), "step": int(step), "best": dict(best), "bad_epochs": int(bad_epochs),
           "config": cfg.to_dict(), "meta": {**meta, "lsdc_checkpoint_version": CHECKPOINT_VERSION}}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    version = ckpt.get("meta", {}).get("lsdc_checkpoint_version")
    if version != CHECKPOINT_VERSION:
        raise InputError(f"{path}: checkpoint version {version!r}, this lsdc reads {CHECKPOINT_VERSION}")
    return ckpt


def load_model(path, device="cpu") -> tuple[torch.nn.Module, Config, dict]:
    """(model in eval mode on ``device``, its Config, meta) from a best.pt / last.pt for prediction.

    The model takes ``image`` (B, S, C, H, W) float as the loader yields it, ``level`` (B,) and, when
    ``meta["two_sided"]``, ``side`` (B,) 0 left / 1 right; softmax of ``out["logits"]`` gives
    (normal_mild, moderate, severe). The crop spec is ``cfg.preprocess.spec(meta["view"])``.
    """
    ckpt = load(path)
    cfg = config_from_dict(ckpt["config"])
    meta = ckpt["meta"]
    model = create_model(_no_backbone_file(cfg).model, in_chans=meta["in_chans"], two_sided=meta["two_sided"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, meta


def _no_backbone_file(cfg: Config) -> Config:
    """The trained weights replace any backbone init, so neither a file nor a download is needed."""
    d = cfg.to_dict()
    d["model"].update(pretrained=False, checkpoint_path="")
    return config_from_dict(d)
