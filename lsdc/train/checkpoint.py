"""Checkpoints that resume exactly and load with ``torch.load(weights_only=True)``.

A checkpoint is one dict of tensors and plain Python values (no pickled classes):

    model        state_dict of the bare model (no DDP ``module.`` / compile ``_orig_mod.`` prefix)
    optimizer    AdamW state_dict (param groups keep their "name")
    scheduler    LambdaLR state_dict (the lambda itself is rebuilt from the config)
    scaler       GradScaler state_dict, or None (bf16 and float32 need none)
    rng          one entry per rank: {"python": [...], "numpy": [...], "torch": tensor, "cuda": [tensors]}
    epoch        last finished epoch (0-based); the resumed run starts at epoch + 1
    step         optimizer steps taken so far
    best         {"epoch", "value", "gate_ok"} of the best epoch so far (see evaluate.is_better)
    bad_epochs   epochs since the best one improved (early-stopping counter)
    config       the resolved Config as a plain dict (Config.to_dict())
    meta         {"view", "fold", "in_chans", "two_sided", "lsdc_checkpoint_version"}

``best.pt`` has the same layout as ``last.pt``; :func:`load_model` rebuilds a model for prediction.
:class:`CheckpointSaver` writes both during training and resumes from ``last.pt``. Every lsdc
checkpoint, the localiser's ``localizer.pt`` included, goes through :func:`save_checkpoint` (atomic)
and :func:`load_checkpoint` (``weights_only``, version-checked).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..core.config import Config
from ..core.errors import InputError
from ..core.overrides import config_from_dict
from ..model import create_model
from . import distributed as dist
from .evaluate import is_better

CHECKPOINT_VERSION = 1
LAST_FILE, BEST_FILE = "last.pt", "best.pt"


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


def save_checkpoint(path, payload: dict) -> Path:
    """Write ``payload`` atomically (temporary file + rename): a crash never leaves half a checkpoint.
    The one writer of every lsdc checkpoint: the classifier's best.pt / last.pt and the localiser's."""
    path = Path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, map_location="cpu", *, version_key: str, version: int, what: str = "checkpoint") -> dict:
    """The dict :func:`save_checkpoint` wrote, loaded with ``weights_only=True``; its
    ``meta[version_key]`` must be ``version`` (an InputError naming ``what`` otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    found = ckpt.get("meta", {}).get(version_key)
    if found != version:
        raise InputError(f"{path}: {what} version {found!r}, this lsdc reads {version}")
    return ckpt


def save(path, *, model, optimizer, scheduler, scaler, rng: list, epoch: int, step: int, best: dict,
         bad_epochs: int, cfg: Config, meta: dict) -> None:
    """A classifier checkpoint (the layout in the module docstring), written atomically."""
    save_checkpoint(path, {
        "model": bare(model).state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng, "epoch": int(epoch), "step": int(step), "best": dict(best), "bad_epochs": int(bad_epochs),
        "config": cfg.to_dict(), "meta": {**meta, "lsdc_checkpoint_version": CHECKPOINT_VERSION}})


def load(path, map_location="cpu") -> dict:
    return load_checkpoint(path, map_location, version_key="lsdc_checkpoint_version", version=CHECKPOINT_VERSION)


class CheckpointSaver:
    """One fold's ``best.pt`` and ``last.pt`` (timm's CheckpointSaver, cut down). It keeps the best
    epoch so far (:func:`is_better`) and the early-stopping counter, saves them with the model,
    optimizer, scheduler, scaler and every rank's RNG, and restores all of it on resume."""

    def __init__(self, fold_dir, s, cfg: Config, meta: dict, d: dist.Dist):
        self.last_path, self.best_path = Path(fold_dir) / LAST_FILE, Path(fold_dir) / BEST_FILE
        self.s, self.cfg, self.meta, self.d = s, cfg, meta, d  # s: the training Step (step.py)
        self.best, self.bad_epochs = None, 0

    def resume(self) -> tuple[int, int]:
        """Restore everything from last.pt; returns (the epoch to start at, optimizer steps taken)."""
        s = self.s
        ck = load(self.last_path, map_location=s.device)
        bare(s.model).load_state_dict(ck["model"])
        s.optimizer.load_state_dict(ck["optimizer"])
        s.scheduler.load_state_dict(ck["scheduler"])
        if s.scaler is not None and ck["scaler"] is not None:
            s.scaler.load_state_dict(ck["scaler"])
        self.best, self.bad_epochs = ck["best"], ck["bad_epochs"]
        rng = ck["rng"]
        set_rng_state(rng[self.d.rank] if len(rng) == self.d.world else rng[0])
        return ck["epoch"] + 1, ck["step"]

    def update(self, epoch: int, val: dict, metric: str) -> bool:
        """Whether the epoch with validation metrics ``val`` is the new best (else one more bad epoch)."""
        cand = {"epoch": epoch, "value": val[metric], "gate_ok": not val["dead_classes"]}
        improved = is_better(cand, self.best, metric)
        self.best, self.bad_epochs = (cand, 0) if improved else (self.best, self.bad_epochs + 1)
        return improved

    def out_of_patience(self, patience: int) -> bool:
        return bool(patience and self.bad_epochs >= patience)

    def save(self, epoch: int, step: int, improved: bool) -> None:
        """last.pt, and best.pt too when ``improved``; the main rank writes (every rank must call:
        the RNG states are gathered, so a resumed DDP run continues exactly)."""
        rng = dist.gather(rng_state(), self.d)
        if not self.d.main:
            return
        s = self.s
        state = dict(model=s.model, optimizer=s.optimizer, scheduler=s.scheduler, scaler=s.scaler, rng=rng,
                     epoch=epoch, step=step, best=self.best, bad_epochs=self.bad_epochs, cfg=self.cfg, meta=self.meta)
        if improved:
            save(self.best_path, **state)
        save(self.last_path, **state)


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
