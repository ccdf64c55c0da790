"""``create_loader``: a :class:`~lsdc.loaders.base.Loader` of the dali or torch backend over a store view.

The backend in use is ``loader.backend`` and is logged on "lsdc.loaders"; it is never switched silently.
"""
from __future__ import annotations

import logging

import torch

from ..core.config import Config
from ..core.errors import InputError
from ..store.reader import crop_spec, open_view
from .base import Loader
from .batching import EpochPlan

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


#: DALI is an extra (Linux only, one wheel per CUDA major): its absence is said once per process, not
#: once per loader (a cross-validated run builds two loaders per fold).
DALI_HINT = "pip install 'lsdc[dali-cu12]' or 'lsdc[dali-cu13]' (the CUDA major of your torch) for the DALI loader"
_fallback_said = False


def resolve_backend(name: str) -> tuple[str, str]:
    """(backend, why): ``auto`` is dali when it imports, else torch (with one warning per process)."""
    global _fallback_said
    if name != "auto":
        return name, "requested"
    ok, why = dali_available()
    if ok:
        return "dali", f"auto: {why}"
    if not _fallback_said:
        log.warning("loader.backend=auto uses the torch loader: %s; %s", why, DALI_HINT)
        _fallback_said = True
    return "torch", f"auto: {why}"


def epoch_plan(cfg: Config, store, view: str, rows=None, train: bool = True, rank: int = 0,
               world: int = 1) -> EpochPlan:
    """The :class:`EpochPlan` of ``rows`` (index row ids of ``view``; None = all) of the store.

    train: shuffled (chunk order + shuffle buffer), augmented when ``loader.augment``, class-balanced
    when ``loader.balanced``; else the given rows in order, no augmentation. rank/world: this DDP rank's
    share (see :func:`lsdc.loaders.sampling.shard`).
    """
    reader, meta = open_view(store, view)
    return EpochPlan.create(reader, meta, rows, crop_spec(store, view), cfg.loader, cfg.train.batch_size,
                            cfg.train.seed, train, rank, world)


def create_loader(cfg: Config, store, view: str, rows=None, train: bool = True, rank: int = 0, world: int = 1,
                  mp_context: str | None = None) -> Loader:
    """A loader over the :func:`epoch_plan` of these arguments, on the backend ``loader.backend`` names."""
    lcfg = cfg.loader
    backend, why = resolve_backend(lcfg.backend)
    plan = epoch_plan(cfg, store, view, rows, train, rank, world)
    device_id = _device_id(cfg)
    if backend == "dali":
        ok, reason = dali_available()
        if not ok:
            raise InputError(f"loader.backend=dali but {reason}; {DALI_HINT}, or use loader.backend=torch")
        from .pipeline_dali import DaliLoader
        loader = DaliLoader(plan, lcfg.channels, lcfg.workers, device_id)
        where = "GPU" if device_id is not None else "CPU-only mode"
    elif backend == "torch":
        from .torch_backend import TorchLoader
        loader = TorchLoader(plan, lcfg.channels, lcfg.workers, mp_context, pin_memory=device_id is not None)
        where = f"{lcfg.workers} worker processes"
    else:
        raise InputError(f"unknown loader backend {backend!r}")
    log.info("loader backend=%s (%s; %s) view=%s rows=%d rank=%d/%d steps=%d train=%s augment=%s balanced=%s",
             backend, why, where, view, len(plan.rows), rank, world, len(loader), train, plan.lcfg.augment,
             plan.balanced)
    return loader
