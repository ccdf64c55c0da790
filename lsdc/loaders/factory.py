"""``create_loader``: one interface over the dali, torch and dicom (seed baseline) backends.

Every loader is an iterable of dicts

    image     float32 [B, S, C, out_px, out_px]   normalised (augment.py), C = loader.channels
    label     int64 [B]   0/1/2, -1 where train.csv is blank
    level     int64 [B]   0..4 (L1/L2 .. L5/S1)
    side      int64 [B]   0 left / 1 right on two-sided views, 0 on the centre view
    row       int64 [B]   index row id (a rank's padded share repeats real row ids, never invents one)
    study_id  int64 [B]

with ``len(loader)`` = steps per epoch, ``loader.set_epoch(e)`` for the next permutation, and
``loader.backend`` naming the backend in use (also logged on "lsdc.loaders"; never switched silently).
"""
from __future__ import annotations

import logging

import torch

from ..core.config import Config
from ..core.errors import InputError
from ..preprocess.store import crop_spec, read_index
from .batching import EpochPlan
from .reader import open_view

log = logging.getLogger("lsdc.loaders")


def dali_available() -> tuple[bool, str]:
    try:
        import nvidia.dali  # noqa: F401
        from nvidia.dali.plugin import pytorch  # noqa: F401
    except ImportError as e:
        return False, f"nvidia-dali does not import ({e})"
    return True, "nvidia-dali imports"


def _device_id(cfg: Config) -> int | None:
    """The CUDA device DALI runs on, or None for DALI's CPU-only mode."""
    if cfg.train.device == "cpu" or not torch.cuda.is_available():
        return None
    return torch.cuda.current_device()


def resolve_backend(name: str) -> tuple[str, str]:
    """(backend, why): ``auto`` is dali when it imports, else torch."""
    if name != "auto":
        return name, "requested"
    ok, why = dali_available()
    return ("dali", f"auto: {why}") if ok else ("torch", f"auto: {why}")


def create_loader(cfg: Config, store, view: str, rows=None, train: bool = True, rank: int = 0, world: int = 1,
                  data_dir=None, mp_context: str | None = None):
    """A loader over ``rows`` (index row ids of ``view``; None = all) of the store.

    train: shuffled (chunk order + shuffle buffer), augmented when ``loader.augment``, class-balanced
    when ``loader.balanced``; else the given rows in order, no augmentation. rank/world: this DDP rank's
    share (see reader.shard). data_dir: the competition folder, needed by the dicom baseline only.
    """
    lcfg = cfg.loader
    backend, why = resolve_backend(lcfg.backend)
    spec = crop_spec(store, view)
    reader, meta = open_view(store, view)
    plan = EpochPlan.create(reader, meta, rows, spec, lcfg, cfg.train.batch_size, cfg.train.seed, train, rank, world)
    device_id = _device_id(cfg)
    if backend == "dali":
        ok, reason = dali_available()
        if not ok:
            raise InputError(f"loader.backend=dali but {reason}; use loader.backend=torch or auto")
        from .pipeline_dali import DaliLoader
        loader = DaliLoader(plan, lcfg.channels, lcfg.workers, device_id)
        where = "GPU" if device_id is not None else "CPU-only mode"
    elif backend == "torch":
        from .torch_backend import TorchLoader
        loader = TorchLoader(plan, lcfg.channels, lcfg.workers, mp_context, pin_memory=device_id is not None)
        where = f"{lcfg.workers} worker processes"
    elif backend == "dicom":
        if data_dir is None:
            raise InputError("loader.backend=dicom (the seed-style baseline) reads DICOMs: pass the data folder")
        from .dicom_baseline import DicomLoader
        loader = DicomLoader(plan, read_index(store, view), data_dir, lcfg.channels, lcfg.workers, mp_context)
        where = f"{lcfg.workers} worker processes, pydicom per sample"
    else:
        raise InputError(f"unknown loader backend {backend!r}")
    log.info("loader backend=%s (%s; %s) view=%s rows=%d rank=%d/%d steps=%d train=%s augment=%s balanced=%s",
             backend, why, where, view, len(plan.rows), rank, world, len(loader), train, plan.lcfg.augment,
             plan.balanced)
    return loader
